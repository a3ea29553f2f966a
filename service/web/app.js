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

// ---------------------------------------------------------------------------- wine

async function loadRoster() {
  const model = await api("models/wine");
  const latest = model.versions.find((v) => v.version === model.latest_ready_version);
  if (!latest) throw new Error("The wine model is not ready.");
  const box = $("wine-guests");
  box.replaceChildren(...latest.preprocessing.roster.map((name) => {
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

async function predictWine() {
  const guests = [...document.querySelectorAll('input[name="guest"]:checked')].map((t) => t.value);
  const answer = await api("predict/wine", { guests });
  $("wine-bottles").textContent = answer.bottles.toFixed(1);
  $("wine-buy").textContent = `(buy ${answer.buy})`;
}

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
  $("spam-probability").textContent = `spam probability ${percent}%`;
}

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
}

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
