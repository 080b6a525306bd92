// The Train screen: train the avatar's own model on the person's replies, follow the job, read its evaluation,
// and choose which model answers.
//
// On show it reads `GET /v1/training/data` (how many replies, their span, the split; Start is enabled only when
// there are enough and the server can train), `GET /v1/persona/model` (which model answers, the trained
// models, whether this server can train) and `GET /v1/training/jobs` (newest first). A queued or running job is
// followed on `GET /v1/training/jobs/{id}/events` with the fetch-based SSE reader (the stream needs the bearer
// token, which EventSource cannot send): `progress` events paint the stage, the bar, loss, tokens/s, the ETA and
// the loss curve; the final `done|failed|cancelled` event carries the job, whose evaluation is then shown and
// the model state reloaded (a passing model is switched on by the server). Stop is
// `POST /v1/training/jobs/{id}/cancel`. The switch "Answer with my trained model" PUTs `{"use": "tuned",
// "tuned_model_id": newest}` or `{"use": "base"}`; Roll back PUTs `{"use": "previous"}`. What the page received
// is kept as `window.somaTrain` for the tests (like `window.somaImport`).
import { ApiError, api } from "./api.js";
import { el, focusIfIdle, size, when } from "./dom.js";
import { dataText, drawCurve, duration, jobLine, num, resultView, stageText } from "./train-view.js";
import { openEvents } from "./sse.js";

const $ = (id) => document.getElementById(id);
const IDLE_MS = 45_000; // the server sends a keep-alive every 15 s: this much silence is a dead stream
const FOLLOW_RETRIES = 5; // reconnects in a row without an event before the page stops following
const MAX_EVENTS = 2000; // kept in window.somaTrain per page load
const RUNNING = ["queued", "running"];
const UNAVAILABLE = "the base model's training weights are not provisioned on this server (its administrator "
  + "can add them with: soma models provision)";

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
});

/**
 * Sets up the Train screen once. Returns `show()` (the screen opened: load the data, the model state and the
 * jobs, and follow a running job) and `reset()` (sign-out: stop following, forget everything shown).
 */
export function setUpTraining() {
  const state = { generation: 0, data: null, model: null, jobs: [], job: null, follow: null, unavailable: "" };
  const record = { events: [], jobs: [] };
  window.somaTrain = record;

  const problem = (error) => (error instanceof ApiError ? error.message : "no connection to your Soma server.");
  const running = () => !!state.job && RUNNING.includes(state.job.state);

  /** Start is enabled only with enough replies, a server that can train, and no job of theirs running. */
  function updateStart() {
    const data = state.data;
    const canTrain = state.model ? state.model.can_train : !state.unavailable;
    $("train-start").disabled = !data?.enough || !canTrain || !!state.unavailable || running();
    let hint = "";
    if (running()) hint = "A training is running: it shows below.";
    else if (state.unavailable || !canTrain) hint = "Training is not available on this server.";
    else if (data && !data.enough) hint = "Import more of your chats first.";
    $("train-start-hint").textContent = hint;
  }

  function renderData(data) {
    state.data = data;
    const words = dataText(data);
    $("train-data").textContent = words.summary;
    $("train-needed").hidden = !words.needed;
    $("train-needed-text").textContent = words.needed || "";
    $("train-dropped").textContent = words.dropped;
    updateStart();
  }

  function showUnavailable(reason) {
    state.unavailable = reason;
    $("train-unavailable").hidden = !reason;
    $("train-unavailable").textContent = reason ? `Training is not available on this server: ${reason}.` : "";
    updateStart();
  }

  function renderModel(model) {
    state.model = model;
    const models = model.models || [];
    const active = models.find((m) => m.id === model.tuned_model_id);
    $("train-model-status").textContent = model.active === "tuned"
      ? `Your avatar answers with the model trained on ${active ? when(active.created_at, { withTime: true })
        : "your replies"}.`
      : `Your avatar answers with the generic model (${model.base}) and your persona.`;
    $("train-use").checked = model.active === "tuned";
    $("train-use").disabled = !models.length;
    const previous = models.find((m) => m.id === model.previous_tuned_model_id);
    $("train-rollback").hidden = !model.previous_tuned_model_id;
    $("train-rollback").textContent = previous
      ? `Roll back to the model from ${when(previous.created_at, { withTime: true })}` : "Roll back";
    $("train-models-title").hidden = !models.length;
    $("train-models").replaceChildren(...models.map((m) => modelItem(m, model.tuned_model_id)));
    if (!model.can_train) showUnavailable(UNAVAILABLE);
    else if (state.unavailable === UNAVAILABLE) showUnavailable("");
    updateStart();
  }

  function modelItem(m, activeId) {
    const nameId = `train-model-${m.id}`;
    const reduction = m.evaluation?.style_distance_reduction;
    const closer = typeof reduction === "number" ? `, ${Math.round(reduction * 100)} % closer to your style` : "";
    return el("li", { class: "past", "data-id": m.id },
      el("p", { class: "train-model-name", id: nameId },
        el("strong", { text: `Trained ${when(m.created_at, { withTime: true })}` }), " ",
        el("span", { class: m.passed ? "badge status-done" : "badge", text: m.passed ? "Passed" : "Did not pass" }),
        " ", m.id === activeId ? el("span", { class: "badge status-done", text: "In use" }) : null),
      el("p", { class: "muted", text: `${size(m.bytes || 0)}${closer}` }),
      m.id === activeId ? null : el("button", { class: "secondary-button small", type: "button",
        text: "Answer with this one", "aria-describedby": nameId,
        on: { click: () => choose({ use: "tuned", tuned_model_id: m.id }, "That model now answers you.") } }));
  }

  function renderJobs(jobs) {
    state.jobs = jobs;
    $("train-jobs-empty").hidden = jobs.length > 0;
    $("train-jobs").replaceChildren(...jobs.map((job) => {
      const line = jobLine(job);
      const item = el("li", { class: "past", "data-id": job.id },
        el("p", { class: "run-title" }, el("strong", { text: line.when }), " ",
          el("span", { class: `badge status-${job.state}`, text: line.state })),
        line.detail ? el("p", { class: job.state === "failed" ? "error" : "muted", text: line.detail }) : null);
      if (!RUNNING.includes(job.state) && job.id !== state.job?.id && !running()) { // one job on show at a time
        item.append(el("button", { class: "secondary-button small", type: "button", text: "Show",
          "aria-label": `Show the training of ${line.when}`, on: { click: () => showJob(job, { focus: true }) } }));
      }
      return item;
    }));
  }

  /** Paints a progress object (a `progress` event, or a job's `live`). */
  function renderProgress(p) {
    const bar = $("train-bar");
    const training = p.stage === "training" && p.total_steps > 0;
    if (training) {
      bar.max = p.total_steps;
      bar.value = Math.min(p.step, p.total_steps);
    } else if (["evaluating", "exporting", "sampling", "deciding", "done"].includes(p.stage)) {
      bar.max = 1;
      bar.value = 1; // the training steps are all done; the stage says what happens now
    } else {
      bar.removeAttribute("value"); // indeterminate until the job knows its steps
    }
    const percent = p.total_steps > 0 ? Math.floor((100 * Math.min(p.step, p.total_steps)) / p.total_steps) : 0;
    // The live region changes at most every 10 %: a screen reader is not read every step.
    const announced = training ? `${stageText(p.stage)}: ${Math.floor(percent / 10) * 10} % done` : stageText(p.stage);
    if ($("train-stage").textContent !== announced) $("train-stage").textContent = announced;
    $("train-step").textContent = p.total_steps > 0 ? `${p.step} of ${p.total_steps}` : "—";
    $("train-loss").textContent = num(p.loss);
    $("train-speed").textContent = typeof p.tokens_per_s === "number" ? `${Math.round(p.tokens_per_s)} tokens/s` : "—";
    $("train-eta").textContent = typeof p.eta_s === "number" ? `about ${duration(p.eta_s)}` : "—";
    const caption = drawCurve($("train-curve"), p.curve);
    $("train-curve-caption").textContent = caption;
  }

  /** Shows ``job``: a running one is followed live, a finished one shows its outcome. */
  function showJob(job, { focus = false } = {}) {
    state.job = job;
    if (record.jobs.at(-1)?.id === job.id) record.jobs[record.jobs.length - 1] = job;
    else record.jobs.push(job);
    const live = RUNNING.includes(job.state);
    $("train-run").hidden = !live;
    $("train-stop").disabled = false;
    if (live) {
      $("train-result").replaceChildren();
      renderProgress(job.live || { stage: job.stage, step: job.step, total_steps: job.total_steps,
        loss: job.losses?.at(-1)?.[1] ?? null, curve: job.losses || [] });
      follow(job);
    } else {
      $("train-result").replaceChildren(resultView(job, "train-result-title"));
      if (focus) $("train-result-title").focus();
    }
    renderJobs(state.jobs);
    updateStart();
  }

  /** Reads the job's events to its final one (reconnecting a dropped stream), then shows how it ended. */
  async function follow(job) {
    if (state.follow?.id === job.id) return; // already followed (the screen was opened again)
    state.follow?.controller.abort();
    const controller = new AbortController();
    const mine = { id: job.id, controller };
    state.follow = mine;
    const { signal } = controller;
    const path = `/v1/training/jobs/${encodeURIComponent(job.id)}/events`;
    let final = null;
    for (let attempt = 0; !final && !signal.aborted && attempt <= FOLLOW_RETRIES; attempt += 1) {
      try {
        for await (const { event, data } of openEvents(path, { signal, idleMs: IDLE_MS })) {
          const body = JSON.parse(data);
          if (record.events.length < MAX_EVENTS) record.events.push({ event, data: body });
          attempt = 0; // it answered: the next drop starts the back-off again
          if (event === "progress" && state.job?.id === job.id) {
            state.job = { ...state.job, state: body.stage === "queued" ? "queued" : "running", live: body };
            renderProgress(body);
          } else if (["done", "failed", "cancelled"].includes(event)) {
            final = body.id ? body : { ...state.job, state: "failed", error: body.error || "erased" };
            break;
          }
        }
      } catch (error) {
        if (signal.aborted) break;
        if (error instanceof ApiError && error.status < 500 && error.status !== 429) break;
      }
      if (!final && !signal.aborted) await sleep(1000 * 2 ** Math.min(attempt, 4), signal);
    }
    if (state.follow === mine) state.follow = null;
    if (signal.aborted) return;
    if (!final) { // the stream could not be followed: ask for the job as it is now
      try { final = await api(`/v1/training/jobs/${encodeURIComponent(job.id)}`); } catch { final = null; }
      if (signal.aborted) return;
      if (!final || RUNNING.includes(final.state)) {
        $("train-stage").textContent = "Lost touch with the training. Your server goes on with it: open this "
          + "screen again to see how it is doing.";
        return;
      }
    }
    const index = state.jobs.findIndex((j) => j.id === final.id);
    if (index >= 0) state.jobs[index] = final;
    showJob(final);
    focusIfIdle($("train-result-title"), $("train-stop"));
    await Promise.all([loadModel(), loadData()]);
  }

  async function loadData() {
    const generation = state.generation;
    try {
      const data = await api("/v1/training/data");
      if (generation === state.generation) renderData(data);
    } catch (error) {
      if (generation !== state.generation) return;
      if (error instanceof ApiError && error.status === 503) {
        $("train-data").textContent = "";
        showUnavailable(error.code === "models_unavailable" ? "it was started without models" : error.message);
      } else {
        $("train-error").textContent = `Your replies could not be counted: ${problem(error)}`;
      }
    }
  }

  async function loadModel() {
    const generation = state.generation;
    try {
      const model = await api("/v1/persona/model");
      if (generation === state.generation) renderModel(model);
    } catch (error) {
      if (generation !== state.generation || (error instanceof ApiError && error.status === 503)) return;
      $("train-model-error").textContent = `Which model answers could not be read: ${problem(error)}`;
    }
  }

  async function load() {
    const generation = state.generation;
    $("train-error").textContent = "";
    $("train-model-error").textContent = "";
    let jobs = [];
    await Promise.all([loadData(), loadModel(), (async () => {
      try { jobs = (await api("/v1/training/jobs")).jobs; } catch (error) {
        if (generation === state.generation && !(error instanceof ApiError && error.status === 503)) {
          $("train-error").textContent = `Your trainings could not be listed: ${problem(error)}`;
        }
      }
    })()]);
    if (generation !== state.generation) return;
    state.jobs = jobs;
    const shown = state.job && jobs.find((j) => j.id === state.job.id);
    const newest = jobs[0];
    if (newest && (RUNNING.includes(newest.state) || !shown)) showJob(newest);
    else if (shown) showJob(shown);
    else renderJobs(jobs);
  }

  async function choose(body, done) {
    const generation = state.generation;
    $("train-model-error").textContent = "";
    $("train-model-note").textContent = "";
    try {
      const model = await api("/v1/persona/model", { method: "PUT", body: JSON.stringify(body) });
      if (generation !== state.generation) return;
      renderModel(model);
      $("train-model-note").textContent = done;
    } catch (error) {
      if (generation !== state.generation) return;
      if (state.model) renderModel(state.model); // the switch goes back to what really answers
      $("train-model-error").textContent = `Not changed: ${problem(error)}`;
    }
  }

  $("train-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const generation = state.generation;
    const minutes = Number(new FormData($("train-form")).get("train-minutes") || 60);
    $("train-error").textContent = "";
    $("train-start").disabled = true;
    try {
      const job = await api("/v1/training/jobs", { method: "POST", body: JSON.stringify({ minutes }) });
      if (generation !== state.generation) return;
      state.jobs = [job, ...state.jobs.filter((j) => j.id !== job.id)];
      showJob(job);
      $("train-stop").focus();
    } catch (error) {
      if (generation !== state.generation) return;
      updateStart();
      if (error instanceof ApiError && error.code === "job_running") {
        $("train-error").textContent = "A training of yours is already running: it shows below.";
        await load();
      } else {
        $("train-error").textContent = `Not started: ${problem(error)}`;
      }
    }
  });

  $("train-stop").addEventListener("click", async () => {
    const job = state.job;
    if (!job || !running()) return;
    $("train-stop").disabled = true;
    $("train-stage").textContent = "Stopping…";
    try {
      const body = await api(`/v1/training/jobs/${encodeURIComponent(job.id)}/cancel`, { method: "POST" });
      if (!RUNNING.includes(body.state)) { // ended at once: the stream's final event may already be gone
        state.follow?.controller.abort();
        state.follow = null;
        showJob(body);
        focusIfIdle($("train-start"), $("train-stop"));
      }
    } catch (error) {
      $("train-stop").disabled = false;
      $("train-error").textContent = `Could not stop it: ${problem(error)}`;
    }
  });

  $("train-use").addEventListener("change", () => {
    const on = $("train-use").checked;
    const newest = state.model?.models?.[0];
    if (on) choose({ use: "tuned", ...(newest ? { tuned_model_id: newest.id } : {}) }, "Your trained model now answers you.");
    else choose({ use: "base" }, "The generic model with your persona now answers you.");
  });

  $("train-rollback").addEventListener("click", () => choose({ use: "previous" }, "Rolled back."));

  return {
    show: () => load(),
    reset() {
      state.generation += 1;
      state.follow?.controller.abort();
      Object.assign(state, { data: null, model: null, jobs: [], job: null, follow: null, unavailable: "" });
      record.events.length = record.jobs.length = 0;
      for (const id of ["train-error", "train-start-hint", "train-dropped", "train-needed-text", "train-stage",
        "train-model-status", "train-model-note", "train-model-error"]) $(id).textContent = "";
      $("train-data").textContent = "Loading…";
      for (const id of ["train-result", "train-models", "train-jobs", "train-curve"]) $(id).replaceChildren();
      $("train-run").hidden = $("train-needed").hidden = $("train-unavailable").hidden = true;
      $("train-rollback").hidden = $("train-models-title").hidden = true;
      $("train-use").checked = false;
      $("train-use").disabled = $("train-start").disabled = true;
      $("train-form").reset();
    },
  };
}
