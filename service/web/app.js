// The demo page: plain JavaScript calling the service's public API, as any frontend would.
"use strict";

const $ = (id) => document.getElementById(id);

// POST (or GET without a body) and return the JSON answer; an API error becomes an Error whose
// message is the service's own words, so the page can show them.
async function api(path, body) {
  let response;
  try {
    response = await fetch(path, body === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (err) {
    throw new Error(`The service could not be reached (${err.message}).`);
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(`${response.status}: ${answer.error || response.statusText}`);
  }
  return answer;
}

// Runs a prediction and routes any failure to the section's error line.
async function guarded(errorId, work) {
  $(errorId).textContent = "";
  try {
    await work();
  } catch (err) {
    $(errorId).textContent = err.message;
  }
}

// A "Why?" button that shows or hides its panel's explanation; while shown, the explanation is
// fetched again after every prediction. Returns whether it is shown.
function whyToggle(name, explain) {
  const button = $(`${name}-why`);
  const view = $(`${name}-why-view`);
  button.addEventListener("click", () => {
    const open = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", String(open));
    button.closest("section").classList.toggle("explaining", open);
    view.hidden = !open;
    if (open) guarded(`${name}-error`, explain);
  });
  return () => button.getAttribute("aria-expanded") === "true";
}

// Answers can arrive out of order when questions come fast (ticking guests): a view draws only
// the answer to the latest question it asked.
function latestOnly(ask, draw) {
  let asked = 0;
  return async () => {
    const mine = ++asked;
    const answer = await ask();
    if (mine === asked) draw(answer);
  };
}

const signed = (value, digits) => `${value < 0 ? "\u2212" : "+"}${Math.abs(value).toFixed(digits)}`;

function element(tag, attributes = {}, text = "") {
  const made = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) made.setAttribute(key, value);
  if (text) made.textContent = text;
  return made;
}

// ---------------------------------------------------------------------------- wine

let roster = [];

async function loadRoster() {
  const model = await api("models/wine");
  const latest = model.versions.find((v) => v.version === model.latest_ready_version);
  if (!latest) throw new Error("The wine model is not ready.");
  roster = latest.preprocessing.roster;
  const box = $("wine-guests");
  box.replaceChildren(...roster.map((name) => {
    const label = document.createElement("label");
    const tick = document.createElement("input");
    tick.type = "checkbox";
    tick.name = "guest";
    tick.value = name;
    tick.addEventListener("change", () => guarded("wine-error", predictWine));
    label.append(tick, name);
    return label;
  }));
}

const guestList = () => [...document.querySelectorAll('input[name="guest"]:checked')].map((t) => t.value);

async function predictWine() {
  const answer = await api("predict/wine", { guests: guestList() });
  $("wine-bottles").textContent = answer.bottles.toFixed(1);
  $("wine-buy").textContent = `(buy ${answer.buy})`;
  if (wineWhyShown()) await explainWine();
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes, text = "") {
  const made = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) made.setAttribute(key, value);
  if (text) made.textContent = text;
  return made;
}

// The network drawn left to right: guests (ticked ones filled), hidden units (lit by their
// activation), bottles. Lines run from each guest present to each active unit, and from each
// active unit to the bottles, green where it adds bottles and red where it takes them away,
// thicker for more. The units that contribute most carry their meaning from the model card.
function drawNetwork(answer) {
  const picture = $("wine-network");
  const present = new Set(answer.guests.map((g) => g.guest));
  const units = answer.hidden.units;
  const guestY = (i) => 30 + (i * 540) / Math.max(1, roster.length - 1);
  const unitY = (j) => 14 + (j * 572) / Math.max(1, units.length - 1);
  const out = { x: 730, y: 300 };
  const guestX = 92;
  const unitX = 320;
  const lines = svg("g", { class: "edges" });
  const nodes = svg("g", { class: "nodes" });
  const labels = svg("g", { class: "labels" });
  const active = units.filter((u) => u.active);
  const strongest = Math.max(1e-9, ...active.map((u) => Math.abs(u.contribution)));
  const liveliest = Math.max(1e-9, ...active.map((u) => u.activation));
  roster.forEach((name, i) => {
    if (!present.has(name)) return;
    for (const u of active) {
      lines.append(svg("line", { x1: guestX, y1: guestY(i), x2: unitX, y2: unitY(u.unit), class: "in" }));
    }
  });
  for (const u of active) {
    lines.append(svg("line", {
      x1: unitX, y1: unitY(u.unit), x2: out.x, y2: out.y,
      class: u.contribution >= 0 ? "adds" : "removes",
      "stroke-width": (0.6 + (5 * Math.abs(u.contribution)) / strongest).toFixed(2),
    }));
  }
  roster.forEach((name, i) => {
    nodes.append(svg("circle", { cx: guestX, cy: guestY(i), r: 8, class: present.has(name) ? "guest present" : "guest" }));
    nodes.append(svg("text", { x: guestX - 14, y: guestY(i) + 5, "text-anchor": "end", class: "name" }, name));
  });
  for (const u of units) {
    const unit = svg("circle", {
      cx: unitX, cy: unitY(u.unit), r: 5.5, class: u.active ? "unit active" : "unit",
      "fill-opacity": u.active ? (0.35 + (0.65 * u.activation) / liveliest).toFixed(2) : "1",
    });
    unit.append(svg("title", {}, `unit ${u.unit}: ${u.meaning} (activation ${u.activation.toFixed(2)})`));
    nodes.append(unit);
  }
  const top = [...active].sort((a, b) => Math.abs(b.contribution) - Math.abs(a.contribution)).slice(0, 5);
  for (const u of top) {
    labels.append(svg("text", { x: unitX + 12, y: unitY(u.unit) + 5, class: "unit-label" }, u.meaning.split(";")[0]));
  }
  nodes.append(svg("circle", { cx: out.x, cy: out.y, r: 16, class: "bottles" }));
  labels.append(svg("text", { x: out.x + 16, y: out.y + 36, "text-anchor": "end", class: "name" },
    `${answer.bottles.toFixed(1)} bottles`));
  if (!answer.hidden.available) {
    labels.append(svg("text", { x: unitX, y: 300, "text-anchor": "middle", class: "name" }, "hidden units unavailable"));
  }
  picture.replaceChildren(lines, nodes, labels);
}

function showWineWhy(answer) {
  drawNetwork(answer);
  const widest = Math.max(1e-9, ...answer.guests.map((g) => Math.abs(g.effect)));
  $("wine-effects").replaceChildren(...answer.guests.map((g) => {
    const row = element("li", { "data-guest": g.guest, "data-effect": String(g.effect) });
    const bar = element("span", { class: g.effect >= 0 ? "bar adds" : "bar removes" });
    bar.style.width = `${(Math.abs(g.effect) / widest) * 100}%`;
    const track = element("span", { class: "track" });
    track.append(bar);
    row.append(element("span", { class: "who" }, g.guest), track,
      element("span", { class: "effect" }, `${signed(g.effect, 2)} bottles`));
    return row;
  }));
  if (!answer.guests.length) $("wine-effects").append(element("li", {}, "Nobody is coming: just you."));
  const carried = answer.hidden.units.filter((u) => u.active)
    .sort((a, b) => Math.abs(b.contribution) - Math.abs(a.contribution));
  $("wine-units-note").textContent = carried.length > SHOWN_UNITS
    ? `The ${SHOWN_UNITS} of ${carried.length} active units that add or take away the most; hover a unit for its meaning.`
    : "";
  $("wine-units").replaceChildren(...carried.slice(0, SHOWN_UNITS).map((u) => element("li",
    { "data-unit": String(u.unit) }, `unit ${u.unit} (${signed(u.contribution, 2)} bottles): ${u.meaning}`)));
  $("wine-hidden-note").textContent = answer.hidden.available ? ""
    : `Hidden units unavailable: ${answer.hidden.reason}`;
}

const SHOWN_UNITS = 8;
const explainWine = latestOnly(() => api("explain/wine", { guests: guestList() }), showWineWhy);
const wineWhyShown = whyToggle("wine", explainWine);

// ---------------------------------------------------------------------------- spam

const EXAMPLES = {
  spam: "From: prizes@lucky-winner.example\nSubject: CONGRATULATIONS!!! You have WON $1,000,000\n\n" +
    "Dear friend, you have been selected to receive a FREE cash prize of $1,000,000!\n" +
    "Click here now to claim your money. This limited time offer expires today.\n" +
    "Act now! 100% guaranteed, no risk. To be removed from our mailing list reply REMOVE.",
  ham: "From: Alice <alice@example.org>\nSubject: Re: notes from Tuesday's meeting\n\n" +
    "Hi Bob,\n\nThanks for sending the notes. I looked through the patch you mentioned and " +
    "I think the change to the config parser is fine, but could you add a test for the empty " +
    "file case before we merge it? I'll be in the office on Thursday if you want to go through it.\n\n" +
    "Cheers,\nAlice",
};

async function predictSpam() {
  const answer = await api("predict/spam", { text: $("spam-text").value });
  const percent = Math.round(answer.probability * 100);
  $("spam-verdict").textContent = answer.spam ? "Spam" : "Ham";
  $("spam-bar").style.width = `${percent}%`;
  $("spam-gauge").setAttribute("aria-valuenow", answer.probability.toFixed(3));
  $("spam-probability").textContent = answer.test_pattern
    ? `spam: the ${answer.test_pattern} test pattern matched` : `spam probability ${percent}%`;
  if (spamWhyShown()) await explainSpam();
}

// Effects come on the log-odds (the logit, where the network adds up its evidence) and in
// probability. The page ranks and colours by the log-odds, which stays informative where the
// probability is saturated (a model sure of its answer moves by thousandths of a point), and shows
// the points beside it, to two significant digits. An older model's answer without log-odds
// falls back to the points.
const points = (effect) => (effect === 0 ? "0 points"
  : `${effect < 0 ? "\u2212" : "+"}${Math.abs(effect * 100).toPrecision(2)} points`);
const strengthOf = (w) => (w.log_odds_effect ?? w.effect) || 0;
const described = (w) => (w.log_odds_effect == null ? points(w.effect)
  : `${w.log_odds_effect < 0 ? "\u2212" : "+"}${Math.abs(w.log_odds_effect).toFixed(2)} log-odds (${points(w.effect)})`);

// The text the model read, each examined word marked in the colour of the way it pushed, deeper
// for a stronger push. Offsets count code points, so the text is sliced as an array of them.
function highlight(text, tokens) {
  const chars = Array.from(text);
  const strongest = Math.max(1e-12, ...tokens.map((t) => Math.abs(strengthOf(t))));
  const parts = [];
  let at = 0;
  for (const t of tokens) {
    const effect = strengthOf(t);
    if (!effect) continue;
    parts.push(chars.slice(at, t.start).join(""));
    const strength = Math.abs(effect) / strongest;
    const mark = element("mark", { class: effect > 0 ? "to-spam" : "to-ham", "data-word": t.token,
      title: `${t.token}: ${described(t)}` }, chars.slice(t.start, t.end).join(""));
    mark.style.setProperty("--strength", (0.1 + 0.9 * strength).toFixed(3));
    parts.push(mark);
    at = t.end;
  }
  parts.push(chars.slice(at).join(""));
  return parts;
}

function showSpamWhy(answer) {
  $("spam-read").replaceChildren(...highlight(answer.text, answer.tokens));
  // "<headers>" is no word of the text: spam v2 and v3 read the header block itself as one, v3
  // the shapes of numbers ("<digits:5-6>") and links ("<link>"), and v4 what a link, number or
  // amount is ("<shortened link>", "<phone number>").
  const label = (word) => (word === "<headers>" ? "(the header block)" : word === "<link>" ? "(a link)"
    : word.startsWith("<digits:") ? `(a number of ${word.slice(8, -1)} digits)`
    : word.startsWith("<") ? `(${word.slice(1, -1)})` : word);
  const words = (list) => list.map((w) => element("li", { "data-word": w.word }, `${label(w.word)} ${described(w)}`));
  $("spam-ward").replaceChildren(...words(answer.spam_ward));
  $("ham-ward").replaceChildren(...words(answer.ham_ward));
  $("spam-note").textContent = answer.note || `Every one of the ${answer.known_words} known words was examined; ` +
    "words outside the model's vocabulary (not coloured) do not count.";
}

const explainSpam = latestOnly(() => api("explain/spam", { text: $("spam-text").value }), showSpamWhy);
const spamWhyShown = whyToggle("spam", explainSpam);

function useExample(kind) {
  $("spam-text").value = EXAMPLES[kind];
  guarded("spam-error", predictSpam);
}

// ---------------------------------------------------------------------------- digit

const canvas = $("digit-canvas");
const pen = canvas.getContext("2d");
let drawing = false;
let inked = false;

function clearCanvas() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, canvas.width, canvas.height);
  inked = false;
  $("digit-answer").textContent = "?";
  $("digit-bars").replaceChildren();
  const heat = $("digit-heat");
  heat.getContext("2d").clearRect(0, 0, heat.width, heat.height);
  $("digit-runner-up").textContent = "";
}

function point(event) {
  const box = canvas.getBoundingClientRect();
  return [
    (event.clientX - box.left) * (canvas.width / box.width),
    (event.clientY - box.top) * (canvas.height / box.height),
  ];
}

canvas.addEventListener("pointerdown", (event) => {
  drawing = true;
  canvas.setPointerCapture(event.pointerId);
  pen.lineWidth = 20;
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.strokeStyle = "#000";
  pen.beginPath();
  pen.moveTo(...point(event));
});
canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  pen.lineTo(...point(event));
  pen.stroke();
  inked = true;
});
canvas.addEventListener("pointerup", () => {
  drawing = false;
  if (inked) guarded("digit-error", predictDigit);
});

async function predictDigit() {
  if (!inked) {  // a blank canvas is all background: the network would still name a digit
    clearCanvas();
    $("digit-runner-up").textContent = "Draw a digit first.";
    return;
  }
  const answer = await api("predict/digit", { image: canvas.toDataURL("image/png") });
  $("digit-answer").textContent = String(answer.digit);
  $("digit-bars").replaceChildren(...answer.probabilities.map((p, digit) => {
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.title = `${digit}: ${(p * 100).toFixed(1)}%`;
    const fill = document.createElement("i");
    fill.style.height = `${Math.max(1, p * 90)}px`;
    bar.append(fill, String(digit));
    return bar;
  }));
  if (digitWhyShown()) await explainDigit();
}

// The normalised image as the model saw it (light on dark), with each patch's drop over it: red
// where hiding the patch lowers the answer's probability, blue where it raises it.
function drawHeat(answer) {
  const heat = $("digit-heat");
  const brush = heat.getContext("2d");
  const cell = heat.width / answer.image.length;
  answer.image.forEach((row, y) => row.forEach((value, x) => {
    const level = Math.round(value * 255);
    brush.fillStyle = `rgb(${level},${level},${level})`;
    brush.fillRect(x * cell, y * cell, cell, cell);
  }));
  const { patch, stride, drops, hottest } = answer.occlusion;
  const strongest = Math.max(1e-9, ...drops.flat().map(Math.abs));
  drops.forEach((row, i) => row.forEach((drop, j) => {
    if (!drop) return;
    const alpha = 0.8 * Math.sqrt(Math.abs(drop) / strongest);  // so that weaker patches still show
    brush.fillStyle = drop > 0 ? `rgba(230,30,40,${alpha})` : `rgba(40,110,255,${alpha})`;
    brush.fillRect(j * stride * cell, i * stride * cell, patch * cell, patch * cell);
  }));
  brush.strokeStyle = "#f0b429";
  brush.lineWidth = 3;
  brush.strokeRect(hottest.left * cell, hottest.top * cell, patch * cell, patch * cell);
}

function showDigitWhy(answer) {
  if (!answer) {
    $("digit-runner-up").textContent = "Draw a digit first.";
    return;
  }
  drawHeat(answer);
  const percent = (p) => `${(p * 100).toFixed(1)}%`;
  $("digit-runner-up").textContent = `${answer.digit} (${percent(answer.probabilities[answer.digit])}); ` +
    `runner-up ${answer.runner_up.digit} (${percent(answer.runner_up.probability)}), ` +
    `margin ${answer.margin.toFixed(3)}. Hiding the outlined patch costs ${percent(answer.occlusion.hottest.drop)}.`;
}

const explainDigit = latestOnly(
  async () => (inked ? api("explain/digit", { image: canvas.toDataURL("image/png") }) : null), showDigitWhy);
const digitWhyShown = whyToggle("digit", explainDigit);

// ---------------------------------------------------------------------------- start

$("spam-example-spam").addEventListener("click", () => useExample("spam"));
$("spam-example-ham").addEventListener("click", () => useExample("ham"));
$("spam-check").addEventListener("click", () => guarded("spam-error", predictSpam));
$("digit-clear").addEventListener("click", clearCanvas);
$("digit-predict").addEventListener("click", () => guarded("digit-error", predictDigit));
clearCanvas();
guarded("wine-error", async () => {
  await loadRoster();
  await predictWine();
});
