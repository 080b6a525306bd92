// What the Train screen shows, built from the server's JSON: the data summary, a job's live progress in words,
// the loss curve (inline SVG: no chart library), and a finished job's evaluation — the gate's verdict, the
// perplexity and style-distance tables and the side-by-side sample replies.
//
// Pure functions of their arguments (no fetch, no state): train.js calls them with what the API returned.
// Everything from the server goes in as text nodes (`el`), never as markup.
import { count, el, plural, when } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const CURVE_W = 300; // the curve's viewBox; CSS stretches it to the card's width
const CURVE_H = 100;
export const STAGE_WORDS = {
  queued: "Waiting for its turn",
  preparing: "Preparing your replies",
  training: "Training",
  evaluating: "Testing it on the replies kept aside",
  exporting: "Packing the trained model",
  sampling: "Writing sample replies to compare",
  deciding: "Deciding whether to switch it on",
  done: "Done",
};
const DROP_WORDS = {
  media: "only media", link: "only a link", long: "too long", duplicate: "repeated",
  no_context: "no one spoke to you first",
};
const STOP_WORDS = { time: "its time ran out", steps: "it did all its steps", max_steps: "it did all its steps",
  cancelled: "it was stopped" };
const two = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const three = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
const whole = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

/** A number with two decimals, or "—" when the server had none. */
export function num(value) {
  return typeof value === "number" && Number.isFinite(value) ? two.format(value) : "—";
}

/** A style distance with up to three decimals, or "—". */
function dist(value) {
  return typeof value === "number" && Number.isFinite(value) ? three.format(value) : "—";
}

/** Seconds as "45 s", "12 min", "1 h 5 min" (an estimate: no false precision). */
export function duration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "—";
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const rest = minutes % 60;
  return `${Math.floor(minutes / 60)} h${rest ? ` ${rest} min` : ""}`;
}

/** The stage of a job in words ("Training"); an unknown stage as the server names it. */
export function stageText(stage) {
  return STAGE_WORDS[stage] || String(stage || "").replaceAll("_", " ");
}

/**
 * The data summary in words (`GET /v1/training/data`): {summary, needed, dropped}; ``needed`` is null when there
 * is enough to train, else the sentence saying how many more replies it takes.
 */
export function dataText(data) {
  const span = data.first_at && data.last_at
    ? ` from ${when(data.first_at)} to ${when(data.last_at)}` : "";
  const summary = data.replies
    ? `${count(data.replies)} of your replies${span}; ${count(data.train)} to learn from, ${count(data.heldout)} `
      + "kept aside to test it."
    : "No replies of yours were found in your imported chats yet.";
  const more = Math.max(0, data.needed - data.replies);
  const needed = data.enough ? null
    : `Training needs at least ${count(data.needed)} of your replies: ${plural(more, "more reply", "more replies")} `
      + "needed. Importing chats where you wrote adds them.";
  const parts = Object.entries(data.dropped || {}).filter(([, n]) => n > 0)
    .map(([reason, n]) => `${count(n)} ${DROP_WORDS[reason] || reason.replaceAll("_", " ")}`);
  const dropped = parts.length ? `Left out: ${parts.join(", ")}.` : "";
  return { summary, needed, dropped };
}

/**
 * Redraws ``svg`` (the viewBox `0 0 300 100`) as the loss ``curve`` ([[step, loss], ...]) and returns the words
 * for its caption. The line spans the curve's own loss range, so a small fall still shows.
 */
export function drawCurve(svg, curve) {
  const points = (curve || []).filter((p) => Array.isArray(p) && Number.isFinite(p[0]) && Number.isFinite(p[1]));
  svg.replaceChildren();
  if (!points.length) return "Loss over the steps (lower is better): none yet.";
  const steps = points.map((p) => p[0]);
  const losses = points.map((p) => p[1]);
  const [x0, x1] = [Math.min(...steps), Math.max(...steps)];
  const [lo, hi] = [Math.min(...losses), Math.max(...losses)];
  const x = (s) => (x1 > x0 ? ((s - x0) / (x1 - x0)) * CURVE_W : CURVE_W / 2);
  const y = (l) => (hi > lo ? 4 + (1 - (l - lo) / (hi - lo)) * (CURVE_H - 8) : CURVE_H / 2);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map(([s, l]) => `${x(s).toFixed(1)},${y(l).toFixed(1)}`).join(" "));
  line.setAttribute("vector-effect", "non-scaling-stroke"); // the stretched viewBox keeps a 2 px line
  line.setAttribute("class", "train-curve-line");
  svg.append(line);
  const [first, last] = [points[0], points.at(-1)];
  return `Loss over the steps (lower is better): ${num(first[1])} at step ${count(first[0])}, `
    + `${num(last[1])} at step ${count(last[0])}; lowest ${num(lo)}.`;
}

/** The gate's verdict in plain words: "Switched on: …" or "Not switched on: …". */
export function verdictText(result) {
  return result.passed ? `Switched on: ${result.reason}.` : `Not switched on: ${result.reason}.`;
}

function table(caption, head, rows) {
  return el("div", { class: "train-table-wrap" },
    el("table", { class: "train-table" },
      el("caption", { text: caption }),
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, ...rows.map(([name, ...cells]) => el("tr", {},
        el("th", { scope: "row", text: name }), ...cells.map((c) => el("td", { text: c })))))));
}

/** "23 % closer to how you write than today's avatar" (or further). */
export function reductionText(reduction) {
  if (typeof reduction !== "number" || !Number.isFinite(reduction)) return "";
  const percent = whole.format(Math.abs(reduction) * 100);
  return reduction >= 0 ? `The trained model is ${percent} % closer to how you write than today's avatar.`
    : `The trained model is ${percent} % further from how you write than today's avatar.`;
}

function trainingText(training) {
  if (!training) return "";
  const parts = [];
  if (training.steps) parts.push(`${plural(training.steps, "step")}`);
  if (training.seconds) parts.push(`in ${duration(training.seconds)}`);
  let text = parts.length ? `Trained for ${parts.join(" ")}` : "";
  if (typeof training.first_loss === "number" && typeof training.last_loss === "number") {
    text += `${text ? "; " : ""}loss from ${num(training.first_loss)} to ${num(training.last_loss)}`;
  }
  const stopped = training.stopped && (STOP_WORDS[training.stopped] || String(training.stopped).replaceAll("_", " "));
  if (stopped) text += `${text ? "; " : ""}stopped because ${stopped}`;
  return text ? `${text}.` : "";
}

/** One side-by-side sample: what they said, what the person really wrote, today's avatar, the trained model. */
function sampleItem(sample, k) {
  const rows = [["They said", sample.said], ["You really wrote", sample.real], ["Today's avatar", sample.prompt_only],
    ["Trained model", sample.tuned]];
  return el("li", { class: "train-sample" },
    el("h4", { class: "visually-hidden", text: `Sample ${k + 1}` }),
    el("dl", { class: "facts train-sample-facts" },
      ...rows.flatMap(([term, text]) => [el("dt", { text: term }), el("dd", { text: text ?? "—" })])));
}

/**
 * A finished job's outcome as one element: for ``done`` the verdict, the tables and the samples; for ``failed``
 * its error; for ``cancelled`` that it was stopped. ``headingId`` names the result's heading (focus target).
 */
export function resultView(job, headingId) {
  const finished = job.finished_at ? ` on ${when(job.finished_at, { withTime: true })}` : "";
  const heading = el("h3", { id: headingId, tabIndex: -1, text: `The training${finished}` });
  if (job.state === "failed") {
    return el("div", { "data-state": "failed" }, heading,
      el("p", { class: "error train-failed", text: `The training failed: ${job.error || "no reason was given"}.` }),
      el("p", { class: "muted", text: "Nothing was changed: your avatar answers as before." }));
  }
  if (job.state === "cancelled") {
    return el("div", { "data-state": "cancelled" }, heading,
      el("p", { text: "You stopped this training. Nothing was changed: your avatar answers as before." }));
  }
  const r = job.result;
  if (!r) return el("div", { "data-state": job.state }, heading, el("p", { text: "No result was recorded." }));
  const ppl = r.perplexity || {};
  const style = r.style_distance || {};
  const pairs = ppl.pairs ? ` (${plural(ppl.pairs, "reply", "replies")} kept aside)` : "";
  const sampled = r.sampled_pairs ? ` (${plural(r.sampled_pairs, "reply", "replies")} compared)` : "";
  return el("div", { "data-state": "done", class: "train-outcome" }, heading,
    el("p", { class: `train-verdict ${r.passed ? "passed" : "not-passed"}`, text: verdictText(r) }),
    el("p", { class: "muted", text: trainingText(r.training) }),
    table(`How well each model predicts your replies${pairs} — perplexity, lower is better`,
      ["Model", "Perplexity"],
      [["Base model, before training", num(ppl.base)], ["Trained model", num(ppl.tuned)]]),
    table(`How far each one's replies are from how you write${sampled} — style distance, lower is closer`,
      ["Model", "Style distance"],
      [["Generic model", dist(style.base)], ["Today's avatar", dist(style.prompt_only)],
        ["Trained model", dist(style.tuned)]]),
    el("p", { class: "train-reduction", text: reductionText(r.style_distance_reduction) }),
    (r.samples || []).length ? el("h4", { id: `${headingId}-samples`, text: "Sample replies, side by side" }) : null,
    (r.samples || []).length ? el("ol", { class: "train-samples", "aria-labelledby": `${headingId}-samples` },
      ...r.samples.map(sampleItem)) : null);
}

/** One row of the jobs list: when, its state, and how it ended. */
export function jobLine(job) {
  const state = { queued: "Waiting", running: "Running", done: "Done", failed: "Failed", cancelled: "Stopped" };
  let detail = "";
  if (job.state === "done" && job.result) detail = job.result.passed ? "switched on" : "not switched on";
  else if (job.state === "failed" && job.error) detail = job.error;
  else if (job.state === "running") detail = stageText(job.live?.stage || job.stage);
  return { state: state[job.state] || job.state, when: when(job.created_at, { withTime: true }), detail };
}
