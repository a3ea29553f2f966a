"""Explanations apart (issues 25, 32): predictions' p99 at 8 connections, alone and while 8 clients
keep /explain/digit busy, interleaved round by round. Explanations run on their own executor and
queue, so the second p99 should stay within 1.5x of the first."""

from __future__ import annotations

from bench.cases import Case
from bench.load import ROUND_SECONDS, ROUNDS, Run, Wrk, median, show

from support.server import Server

EXPLAIN_CLIENTS = 8
CONNECTIONS = 8  # issue 32: as a user sees it, wrk -c8 on the prediction beside 8 explaining


def explanation_load(wrk: Wrk, server: Server, predictions: list[Case], explanation: Case) -> list[Run]:
    """For each prediction case: a `quiet` run and an `explained` run (with the explanation load
    started just before it and stopped just after), ROUNDS times each; medians."""
    runs = []
    for case in predictions:
        quiet, loaded = [], []
        for _ in range(ROUNDS):
            quiet.append(wrk.run(server, case, CONNECTIONS, "quiet", ROUND_SECONDS))
            load = wrk.start(server.url, explanation, EXPLAIN_CLIENTS, ROUND_SECONDS + 1)
            loaded.append(wrk.run(server, case, CONNECTIONS, "explained", ROUND_SECONDS))
            Wrk.finish(load, explanation, EXPLAIN_CLIENTS, "load")
        for run in (median(case.name, quiet), median(case.name, loaded)):
            show(run)
            runs.append(run)
    return runs
