// The Voice screen: record the person's voice, hear the voices the avatar can speak with, choose one, and search
// for the stock-voice mix closest to the person's.
//
// Enrollment: the page shows one of the server's sentences (`GET /v1/voice/sentences`); Record opens the
// microphone (`Recording` in voice-record.js), whose measures paint the live meter: level in dBFS, clipping, the
// background noise (the quietest 30 ms frames) and the share of speech. Stop encodes the clip as 16-bit mono WAV
// at the context's rate and POSTs it raw to `/v1/voice/clips?sentence=k`; the server measures it again and keeps it (201) or says why
// not (422 `clip_unusable` with its `quality`). The browser's numbers only guide the speaker; the server's
// verdict is the one shown. Voices (`GET /v1/voice/voices`) are listed with their similarity to the person put
// honestly — a match is "the closest available voice", never "your voice". Matched and brought voices can be
// removed (after a confirm; the server puts the avatar back on the default voice if it spoke with one). A Piper
// voice trained elsewhere is brought as multipart `onnx` + `config`; the server tries it before keeping it.
// The match job is polled every second while it runs and this screen is open. What the page measured and showed is kept as
// `window.somaVoice` for the tests (like `window.somaImport`).
import { ApiError, api, auth, authorizedFetch } from "./api.js";
import { el, focusIfIdle, plural } from "./dom.js";
import { Recording } from "./voice-record.js";

const $ = (id) => document.getElementById(id);
const FLOOR_DBFS = -60; // the meter's empty end
const NOISY_DBFS = -45; // background noise above this: say so while recording
const SILENT_DBFS = -90; // digital silence (a muted or virtual microphone), not a room
const QUIET_SPEECH_DBFS = -38; // speech quieter than this: "move closer" (the server decides for real)
const MAX_RECORD_S = 28; // the server takes at most 30 s a clip
const READY_S = 20; // speech the profile needs (profile.ready); 30 s is plenty
const ENOUGH_S = 30;
const POLL_MS = 1000;
const LEVEL_TRACE = 2000; // meter readings kept in window.somaVoice
const SAME_PERSON = 0.8; // resemblyzer cosine the same person reaches on other text (VOICE.md: ~0.97)
export const PROBLEM_WORDS = {
  too_short: "too short — read the whole sentence",
  too_little_speech: "we heard too little speech",
  too_quiet: "too quiet — move closer",
  clipping: "clipping — move back a little",
  noisy: "noisy room",
};
const KIND_NAMES = { stock: "Stock voice", matched: "Closest match", piper: "Piper voice you added" };
const JOB_WORDS = { queued: "Waiting to start…", running: "Trying voices", done: "Done", failed: "Failed",
  cancelled: "Cancelled" };
const one = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const two = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });

/** "−23 dBFS" (a real minus sign, rounded). */
function dbText(db) {
  return `${Math.round(db)} dBFS`.replace("-", "−");
}

/** The server's problem codes in plain words, joined: "too quiet — move closer; noisy room". */
export function problemText(problems) {
  return problems.map((code) => PROBLEM_WORDS[code] || code.replaceAll("_", " ")).join("; ");
}

/** The browser's advice while recording (the server's verdict on the clip is what counts). */
function liveHint(q) {
  if (q.clippedRecently) return PROBLEM_WORDS.clipping;
  if (q.seconds < 1.5) return "Listening…";
  if (q.speechLevel === null || q.speechSeconds < 0.3) return "Start reading the sentence aloud.";
  if (q.speechLevel < QUIET_SPEECH_DBFS) return PROBLEM_WORDS.too_quiet;
  if (q.noise !== null && q.noise > NOISY_DBFS) return PROBLEM_WORDS.noisy;
  return "Sounds good.";
}

/** A voice's similarity to the person, honestly: a match is only ever the closest voice there is. */
export function similarityText(voice) {
  const r = voice.similarity?.r;
  if (r === undefined || r === null) return "Similarity to your recordings: not measured yet.";
  const score = two.format(r);
  const scale = `the same person usually scores ${two.format(SAME_PERSON)} or more`;
  if (voice.kind === "matched") return `Closest available voice: ${score} — ${scale}.`;
  return `Similarity to your recordings: ${score} — ${scale}.`;
}

/**
 * Sets up the Voice screen once. Returns `show()` (the screen opened: load sentences, profile and voices, and
 * follow a running search) and `reset()` (sign-out: stop recording and polling, forget everything shown).
 */
export function setUpVoice() {
  const state = { generation: 0, sentences: [], current: 0, profile: null, recording: null, meterAt: 0,
    voices: null, job: null, timer: null, urls: new Set(), removing: null };
  const record = { levels: [], uploads: [], played: [], jobs: [] }; // jobs: the last state seen of each search
  window.somaVoice = record;

  const problem = (error) => (error instanceof ApiError ? error.message : "no connection to your Soma server.");
  const enrollmentClip = (k) => state.profile?.clips.find((c) => c.source === "enrollment" && c.sentence === k);

  function showSentence() {
    const n = state.sentences.length;
    $("voice-step").textContent = n ? `Sentence ${state.current + 1} of ${n}` : "";
    $("voice-sentence").textContent = state.sentences[state.current] || "";
    $("voice-prev").disabled = state.current <= 0 || !!state.recording;
    $("voice-next").disabled = state.current >= n - 1 || !!state.recording;
    $("voice-record").disabled = !n;
    const label = state.recording ? "Stop" : enrollmentClip(state.current) ? "Record again" : "Record";
    $("voice-record").textContent = label;
    $("voice-record").classList.toggle("recording", !!state.recording);
  }

  /** The bar at every batch; the numbers, the advice and aria a few times a second (the full summary sorts). */
  function paintMeter(quality, { final = false } = {}) {
    const raw = quality.level();
    const level = Math.max(FLOOR_DBFS, raw);
    const fraction = (level - FLOOR_DBFS) / -FLOOR_DBFS;
    $("voice-level").querySelector(".bar").style.transform = `scaleX(${fraction.toFixed(3)})`;
    record.levels.push(Math.round(raw * 10) / 10);
    if (record.levels.length > LEVEL_TRACE) record.levels.splice(0, record.levels.length - LEVEL_TRACE);
    const now = performance.now();
    if (now - state.meterAt < 250 && !final) return;
    state.meterAt = now;
    const q = quality.summary();
    $("voice-level").setAttribute("aria-valuenow", String(Math.round(level)));
    $("voice-level").setAttribute("aria-valuetext", dbText(q.level));
    $("voice-level-value").textContent = dbText(level);
    $("voice-clipping").textContent = q.clippedRecently ? "Clipping now — move back a little"
      : q.clipped ? `${plural(q.clipped, "sample")} clipped` : "None";
    $("voice-clipping").classList.toggle("warn", q.clippedRecently);
    $("voice-noise").textContent = q.noise === null ? "Measuring…" : q.noise <= SILENT_DBFS ? "None (silent)"
      : `${dbText(q.noise)}${q.noise > NOISY_DBFS ? " — noisy room" : ""}`;
    $("voice-speech").textContent = `${one.format(q.speechSeconds)} s (${Math.round(q.speechRatio * 100)} % of `
      + `${one.format(q.seconds)} s)`;
    $("voice-hint").textContent = final ? "" : liveHint(q);
  }

  /** After Stop: the take's clipping, noise and speech stay on show; the level bar goes back to the floor. */
  function settleMeter(quality) {
    paintMeter(quality, { final: true });
    floorLevel();
  }

  function floorLevel() {
    $("voice-level").querySelector(".bar").style.transform = "scaleX(0)";
    $("voice-level").setAttribute("aria-valuenow", String(FLOOR_DBFS));
    $("voice-level").removeAttribute("aria-valuetext");
    $("voice-level-value").textContent = "—";
  }

  function clearMeter() {
    floorLevel();
    for (const id of ["voice-clipping", "voice-noise", "voice-speech"]) $(id).textContent = "—";
    $("voice-hint").textContent = "";
  }

  async function startRecording() {
    const generation = state.generation;
    $("voice-error").textContent = "";
    $("voice-status").textContent = "Opening the microphone…";
    clearMeter();
    const recording = new Recording((quality) => {
      paintMeter(quality);
      if (quality.samples >= MAX_RECORD_S * quality.rate) stopRecording();
    });
    state.recording = recording;
    showSentence();
    try {
      await recording.start();
    } catch (error) {
      if (state.recording === recording) state.recording = null;
      if (generation !== state.generation) return;
      showSentence();
      $("voice-status").textContent = "";
      $("voice-error").textContent = error.message;
      return;
    }
    if (state.recording !== recording) { recording.cancel(); return; } // signed out meanwhile
    $("voice-status").textContent = "Recording: read the sentence aloud, then press Stop.";
  }

  async function stopRecording() {
    const recording = state.recording;
    if (!recording?.quality) return; // not started yet: the click that opens the microphone is still at work
    state.recording = null;
    const k = state.current;
    const browser = recording.quality.summary();
    const wav = recording.stop();
    settleMeter(recording.quality);
    showSentence();
    const entry = { sentence: k, seconds: browser.seconds, browser, rate: recording.quality.rate, status: null,
      quality: null };
    record.uploads.push(entry);
    await upload(k, wav, entry);
  }

  async function upload(k, wav, entry) {
    const generation = state.generation;
    $("voice-status").textContent = "Checking the recording…";
    $("voice-record").disabled = true;
    let response;
    let body = {};
    try { // fetch itself, not authorizedFetch: a 422 answer carries the server's measures beside its error
      const headers = { "Content-Type": "audio/wav" };
      if (auth.token) headers.Authorization = `Bearer ${auth.token}`;
      response = await fetch(`/v1/voice/clips?sentence=${k}`, { method: "POST", headers, body: wav });
      body = await response.json().catch(() => ({}));
    } catch {
      response = null;
    }
    if (generation !== state.generation) return;
    showSentence();
    entry.status = response ? response.status : 0;
    entry.quality = body.clip?.quality || body.quality || null;
    if (response?.status === 201) {
      renderProfile(body.profile);
      const q = body.clip.quality;
      $("voice-status").textContent = `Sentence ${k + 1} kept. Quality: ok — ${one.format(body.clip.speech_s)} s `
        + `of speech, level ${dbText(q.level_dbfs)}, background ${dbText(q.noise_dbfs)}.`;
      const next = state.sentences.findIndex((_, i) => !enrollmentClip(i));
      if (next >= 0) state.current = next;
      showSentence();
    } else if (body.error?.code === "clip_unusable" && body.quality) {
      $("voice-status").textContent = `Sentence ${k + 1} not kept. Quality: `
        + `${problemText(body.quality.problems)}. Press Record to try again.`;
    } else {
      $("voice-status").textContent = "";
      $("voice-error").textContent = `The recording was not saved: ${response
        ? body.error?.message || `HTTP ${response.status}` : "no connection to your Soma server."}`;
    }
  }

  function clipText(clip) {
    const q = clip.quality;
    const verdict = q?.ok ? "quality ok" : `quality: ${problemText(q?.problems || [])}`;
    return `Recorded: ${one.format(clip.speech_s)} s of speech, ${verdict}`;
  }

  function renderProfile(profile) {
    state.profile = profile;
    const items = state.sentences.map((sentence, k) => {
      const clip = enrollmentClip(k);
      const id = `voice-sentence-${k}`;
      return el("li", { class: "voice-clip", "data-sentence": k, "data-id": clip?.id },
        el("p", { class: "voice-clip-text", id, text: `${k + 1}. ${sentence}` }),
        el("p", { class: clip ? "voice-clip-status" : "voice-clip-status muted",
          text: clip ? clipText(clip) : "Not recorded yet" }),
        el("button", { class: "secondary-button small", type: "button", text: clip ? "Retake" : "Record this one",
          "aria-describedby": id, on: { click: () => choose(k) } }));
    });
    $("voice-clips").replaceChildren(...items);
    const imported = (profile?.clips || []).filter((c) => c.source === "import");
    $("voice-imported").replaceChildren(...imported.map((clip) => el("li", { class: "voice-clip", "data-id": clip.id },
      el("span", { text: `A voice note: ${clipText(clip).replace("Recorded: ", "")}` }), " ",
      el("button", { class: "link", type: "button", text: "Remove",
        "aria-label": "Remove this voice note", on: { click: () => removeClip(clip.id) } }))));
    $("voice-imported-box").hidden = !imported.length;
    const speech = profile?.speech_s || 0;
    $("voice-total-bar").value = Math.min(speech, ENOUGH_S);
    $("voice-total").textContent = profile?.ready
      ? `${one.format(speech)} s of speech recorded: enough to find the closest voice.`
      : `${one.format(speech)} s of speech recorded; ${READY_S}–${ENOUGH_S} s are needed.`;
    $("voice-delete").hidden = !(profile?.clips.length);
    const running = state.job && ["queued", "running"].includes(state.job.state);
    $("voice-match").disabled = !profile?.ready || running;
    $("voice-match-hint").textContent = profile?.ready ? "" : `Record at least ${READY_S} s of speech first.`;
    showSentence();
  }

  function choose(k) {
    if (state.recording) return;
    state.current = k;
    showSentence();
    $("voice-status").textContent = `Sentence ${k + 1} chosen: press ${$("voice-record").textContent} and read it.`;
    $("voice-record").focus();
    $("voice-sentence").scrollIntoView({ block: "nearest" });
  }

  async function removeClip(id) {
    const generation = state.generation;
    try {
      await api(`/v1/voice/clips/${encodeURIComponent(id)}`, { method: "DELETE" });
      const { profile } = await api("/v1/voice/profile");
      if (generation !== state.generation) return;
      renderProfile(profile);
      $("voice-status").textContent = "The voice note was removed from your profile.";
      focusIfIdle($("voice-title"));
    } catch (error) {
      if (generation === state.generation) $("voice-error").textContent = `Not removed: ${problem(error)}`;
    }
  }

  function revokeSamples() {
    for (const url of state.urls) URL.revokeObjectURL(url);
    state.urls.clear();
  }

  async function play(voice, button, where) {
    const generation = state.generation;
    button.disabled = true;
    $("voice-list-error").textContent = "";
    try {
      const response = await authorizedFetch(`/v1/voice/voices/${encodeURIComponent(voice.id)}/sample`);
      const url = URL.createObjectURL(await response.blob());
      if (generation !== state.generation) { URL.revokeObjectURL(url); return; }
      state.urls.add(url);
      const audio = el("audio", { controls: true, src: url, "aria-label": `Sample of ${voice.name}` });
      where.querySelector("audio")?.remove();
      where.append(audio);
      record.played.push(voice.id);
      audio.play().catch(() => {}); // autoplay refused: the controls are there
    } catch (error) {
      if (generation === state.generation) $("voice-list-error").textContent = `No sample: ${problem(error)}`;
    } finally {
      button.disabled = false;
    }
  }

  function voiceItem(voice, chosen) {
    const nameId = `voice-name-${voice.id}`;
    const inUse = voice.id === chosen;
    const item = el("li", { class: "voice", "data-id": voice.id });
    const playButton = el("button", { class: "secondary-button small", type: "button", text: "Play",
      "aria-describedby": nameId, on: { click: () => play(voice, playButton, item) } });
    const useButton = el("button", { class: "secondary-button small", type: "button", text: "Use this voice",
      "aria-pressed": inUse ? "true" : "false", "aria-describedby": nameId, on: { click: () => useVoice(voice) } });
    const removeButton = voice.kind !== "stock" && el("button", { class: "secondary-button small", type: "button",
      text: "Remove", "aria-describedby": nameId, on: { click: () => confirmRemove(voice, removeButton) } });
    item.append(...[
      el("p", { class: "voice-name" }, el("strong", { id: nameId, text: voice.name }), " ",
        el("span", { class: "badge", text: KIND_NAMES[voice.kind] || voice.kind }), " ",
        inUse && el("span", { class: "badge status-done", text: "In use" })),
      el("p", { class: "muted voice-similarity", text: similarityText(voice) }),
      voice.license && el("p", { class: "muted voice-license", text: `Licence: ${voice.license}` }),
      el("div", { class: "voice-actions" }, playButton, useButton, removeButton)].filter(Boolean));
    return item;
  }

  function renderVoices(data) {
    revokeSamples();
    state.voices = data;
    $("voice-list").replaceChildren(...data.voices.map((v) => voiceItem(v, data.chosen)));
  }

  /** Asks in the dialog first; kept, focus goes back to the ``opener`` (the voice's Remove button). */
  function confirmRemove(voice, opener) {
    state.removing = { voice, opener };
    $("voice-remove-text").textContent = `${voice.name} is deleted from this machine${voice.id
      === state.voices?.chosen ? "; your avatar goes back to the default voice" : ""}. This cannot be undone.`;
    $("voice-remove-confirm").returnValue = "";
    $("voice-remove-confirm").showModal();
  }

  async function removeVoice({ voice, opener }) {
    const generation = state.generation;
    $("voice-list-error").textContent = "";
    try {
      await api(`/v1/voice/voices/${encodeURIComponent(voice.id)}`, { method: "DELETE" });
    } catch (error) {
      if (generation !== state.generation) return;
      if (!(error instanceof ApiError && error.status === 404)) { // 404: already gone, as wanted
        $("voice-list-error").textContent = `Not removed: ${problem(error)}`;
        return;
      }
    }
    await loadVoices();
    if (generation !== state.generation) return;
    const chosen = state.voices?.voices.find((v) => v.id === state.voices.chosen);
    $("voice-list-status").textContent = `${voice.name} was removed.${chosen
      ? ` Your avatar speaks with ${chosen.name}.` : ""}`;
    focusIfIdle($("voice-list-title"), opener); // its item is gone: focus would be lost on the page
  }

  $("voice-remove-confirm").addEventListener("close", () => {
    const pending = state.removing;
    state.removing = null;
    if (!pending) return;
    if ($("voice-remove-confirm").returnValue === "remove") removeVoice(pending);
    else pending.opener.focus();
  });

  /** The form's two files as multipart (the browser sets the boundary), then the refreshed list. */
  $("voice-piper-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const generation = state.generation;
    const name = $("voice-piper-name").value.trim();
    const [[onnx], [config]] = [$("voice-piper-onnx").files, $("voice-piper-config").files];
    $("voice-piper-error").textContent = "";
    if (!name || !onnx || !config) { $("voice-piper-error").textContent = "Give a name and both files."; return; }
    const form = new FormData();
    form.append("onnx", onnx, onnx.name);
    form.append("config", config, config.name);
    $("voice-piper-submit").disabled = true;
    $("voice-piper-status").textContent = `Sending ${name} (${one.format(onnx.size / 1e6)} MB) and trying it `
      + "out on your server…";
    try {
      const response = await authorizedFetch(`/v1/voice/voices/piper?name=${encodeURIComponent(name)}`,
        { method: "POST", body: form });
      const { voice } = await response.json();
      if (generation !== state.generation) return;
      $("voice-piper-form").reset();
      $("voice-piper-status").textContent = `${voice.name} was added to your voices: play it, or choose it.`;
      await loadVoices();
    } catch (error) {
      if (generation !== state.generation) return;
      $("voice-piper-status").textContent = "";
      $("voice-piper-error").textContent = `Not added: ${problem(error)}`;
    } finally {
      $("voice-piper-submit").disabled = false;
    }
  });

  async function loadVoices() {
    const generation = state.generation;
    try {
      const data = await api("/v1/voice/voices");
      if (generation === state.generation) renderVoices(data);
    } catch (error) {
      if (generation === state.generation) $("voice-list-error").textContent = `Voices: ${problem(error)}`;
    }
  }

  async function useVoice(voice) {
    const generation = state.generation;
    $("voice-list-error").textContent = "";
    try {
      const { chosen } = await api("/v1/voice/choice", { method: "PUT", body: JSON.stringify({ voice_id: voice.id }) });
      if (generation !== state.generation) return;
      renderVoices({ ...state.voices, chosen });
      $("voice-list-status").textContent = `${voice.name} is now your avatar's voice.`;
      $("voice-list").querySelector(`li[data-id="${CSS.escape(voice.id)}"] [aria-pressed]`)?.focus();
    } catch (error) {
      if (generation === state.generation) $("voice-list-error").textContent = `Not changed: ${problem(error)}`;
    }
  }

  function renderJob(job) {
    state.job = job;
    if (record.jobs.at(-1)?.id === job.id) record.jobs[record.jobs.length - 1] = job;
    else record.jobs.push(job);
    const running = ["queued", "running"].includes(job.state);
    $("voice-match-bar").hidden = !running;
    if (job.total > 0 && job.state === "running") {
      $("voice-match-bar").max = job.total;
      $("voice-match-bar").value = Math.min(job.done, job.total);
    } else {
      $("voice-match-bar").removeAttribute("value"); // indeterminate until the job knows its size
    }
    $("voice-match-cancel").hidden = !running;
    $("voice-match").disabled = running || !state.profile?.ready;
    const count = job.state === "running" && job.total ? `: ${job.done} of ${job.total}` : "";
    const error = job.state === "failed" && job.error ? ` — ${job.error}` : "";
    $("voice-match-status").textContent = `${JOB_WORDS[job.state] || job.state}${count}${error}`;
  }

  async function poll() {
    clearTimeout(state.timer);
    state.timer = null;
    const job = state.job;
    if (!job || !["queued", "running"].includes(job.state) || $("voice-view").hidden) return;
    const generation = state.generation;
    state.timer = setTimeout(async () => {
      try {
        const body = await api(`/v1/voice/match/${encodeURIComponent(job.id)}`);
        if (generation !== state.generation) return;
        renderJob(body.job);
        if (body.job.state === "done") await matchDone(body.job);
      } catch (error) {
        if (generation !== state.generation) return;
        $("voice-match-status").textContent = `Lost touch with the search: ${problem(error)}`;
        if (!(error instanceof ApiError)) { poll(); return; } // offline for a moment: ask again
      }
      poll();
    }, POLL_MS);
  }

  async function matchDone(job) {
    await loadVoices();
    const voices = state.voices?.voices || [];
    const match = voices.find((v) => v.id === job.voice_id);
    const other = voices.find((v) => v.id === state.voices.chosen && v.id !== job.voice_id)
      || voices.find((v) => v.kind === "stock");
    const box = $("voice-match-result");
    const base = job.default_similarity?.r;
    const known = typeof base === "number";
    if (!match) {
      box.replaceChildren(el("p", { text: "No mix of the stock voices came closer to your recordings than the "
        + `default voice${known ? ` (${two.format(base)})` : ""}, so nothing was added.` }));
      return;
    }
    const buttons = [match, other].filter(Boolean).map((voice) => {
      const label = voice === match ? "Play the closest voice" : `Play ${voice.name} (for comparison)`;
      const button = el("button", { class: "secondary-button small", type: "button", text: label,
        on: { click: () => play(voice, button, box) } });
      return button;
    });
    const compared = known ? ` The default voice scores ${two.format(base)} on the same sentences.` : "";
    box.replaceChildren(el("p", { text: `${similarityText(match)}${compared}` }),
      el("div", { class: "voice-actions" }, ...buttons));
    focusIfIdle(buttons[0], $("voice-match-cancel"), $("voice-match"));
  }

  $("voice-record").addEventListener("click", () => (state.recording ? stopRecording() : startRecording()));
  $("voice-prev").addEventListener("click", () => { state.current -= 1; showSentence(); });
  $("voice-next").addEventListener("click", () => { state.current += 1; showSentence(); });

  $("voice-imports").addEventListener("click", async () => {
    const generation = state.generation;
    $("voice-error").textContent = "";
    $("voice-imports").disabled = true;
    $("voice-status").textContent = "Looking for your voice in your imported recordings…";
    try {
      const { added, profile } = await api("/v1/voice/profile/imports", { method: "POST" });
      if (generation !== state.generation) return;
      renderProfile(profile);
      $("voice-status").textContent = added
        ? `Added ${plural(added, "clip")} from your imported voice notes.`
        : "No usable voice notes of yours were found among your imports.";
    } catch (error) {
      if (generation !== state.generation) return;
      $("voice-status").textContent = "";
      $("voice-error").textContent = `Not added: ${problem(error)}`;
    } finally {
      $("voice-imports").disabled = false;
    }
  });

  $("voice-delete").addEventListener("click", () => $("voice-confirm").showModal());
  $("voice-confirm").addEventListener("close", async () => {
    if ($("voice-confirm").returnValue !== "delete") { $("voice-delete").focus(); return; }
    const generation = state.generation;
    try {
      await api("/v1/voice/profile", { method: "DELETE" });
      if (generation !== state.generation) return;
      renderProfile(null);
      state.current = 0;
      showSentence();
      $("voice-status").textContent = "Your voice profile and its recordings were deleted.";
      $("voice-title").focus();
      await loadVoices();
    } catch (error) {
      if (generation === state.generation) $("voice-error").textContent = `Not deleted: ${problem(error)}`;
    }
  });

  $("voice-match").addEventListener("click", async () => {
    const generation = state.generation;
    $("voice-match-result").replaceChildren();
    $("voice-match").disabled = true;
    try {
      const { job } = await api("/v1/voice/match", { method: "POST" });
      if (generation !== state.generation) return;
      renderJob(job);
      $("voice-match-cancel").focus();
      poll();
    } catch (error) {
      if (generation !== state.generation) return;
      $("voice-match").disabled = !state.profile?.ready;
      $("voice-match-status").textContent = error instanceof ApiError && error.code === "match_running"
        ? "A search is already running for you; it shows here when it ends." : `Not started: ${problem(error)}`;
    }
  });

  $("voice-match-cancel").addEventListener("click", async () => {
    const job = state.job;
    if (!job) return;
    $("voice-match-cancel").disabled = true;
    try {
      const body = await api(`/v1/voice/match/${encodeURIComponent(job.id)}`, { method: "DELETE" });
      renderJob(body.job);
      focusIfIdle($("voice-match"), $("voice-match-cancel"));
    } catch (error) {
      $("voice-match-status").textContent = `Could not cancel: ${problem(error)}`;
    } finally {
      $("voice-match-cancel").disabled = false;
    }
  });

  async function load() {
    const generation = state.generation;
    $("voice-error").textContent = "";
    try {
      if (!state.sentences.length) state.sentences = (await api("/v1/voice/sentences")).sentences;
      const { profile } = await api("/v1/voice/profile");
      if (generation !== state.generation) return;
      if (!state.recording) {
        renderProfile(profile);
        const next = state.sentences.findIndex((_, i) => !enrollmentClip(i));
        if (next >= 0 && !state.profile?.clips.length) state.current = next;
        showSentence();
      }
    } catch (error) {
      if (generation === state.generation) $("voice-error").textContent = `Your voice could not be loaded: ${problem(error)}`;
    }
    await loadVoices();
    poll(); // a search started before the screen was left goes on being followed
  }

  return {
    show: () => load(),
    reset() {
      state.generation += 1;
      state.recording?.cancel();
      state.recording = null;
      clearTimeout(state.timer);
      Object.assign(state, { sentences: [], current: 0, profile: null, voices: null, job: null, timer: null,
        removing: null });
      if ($("voice-remove-confirm").open) $("voice-remove-confirm").close();
      $("voice-piper-form").reset();
      revokeSamples();
      record.levels.length = record.uploads.length = record.played.length = record.jobs.length = 0;
      for (const id of ["voice-error", "voice-status", "voice-list-status", "voice-list-error", "voice-match-status",
        "voice-total", "voice-match-hint", "voice-piper-status", "voice-piper-error"]) $(id).textContent = "";
      for (const id of ["voice-clips", "voice-imported", "voice-list", "voice-match-result"]) {
        $(id).replaceChildren();
      }
      $("voice-match-bar").hidden = $("voice-match-cancel").hidden = true;
      clearMeter();
      showSentence();
    },
  };
}
