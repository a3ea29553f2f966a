"""Schemathesis fuzzes every operation in the running service's OpenAPI document, valid and
invalid inputs alike: no response is a 5xx, and every one matches what the document says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import StartServer, require_tool

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_no_generated_request_breaks_the_service_or_its_contract(
    start_server: StartServer, tmp_path: Path
) -> None:
    schemathesis = require_tool("st", str(Path(sys.executable).parent / "st"))
    # No API key: prediction endpoints are open and the admin ones answer 403 (documented), so
    # the fuzzer exercises everything without unloading the models it is testing.
    server = start_server(NNSERVE_LOG_LEVEL="warning")
    result = subprocess.run(
        [schemathesis, "run", f"{server.url}/openapi.json", "--checks", CHECKS, "--mode", "all",
         "--max-examples", "200", "--seed", "20261124", "--no-color", "--request-timeout", "10"],
        cwd=tmp_path, capture_output=True, text=True, timeout=400,
    )
    generated = re.search(r"(\d+) generated", result.stdout)
    operations = re.search(r"Tested: (\d+)", result.stdout)
    print(f"\nschemathesis: {generated.group(0) if generated else '?'} over "
          f"{operations.group(1) if operations else '?'} operations")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert operations and int(operations.group(1)) >= 20
    assert "Server error" not in result.stdout
