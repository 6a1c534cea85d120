// The labeling page. Everything from the data (prompts, completions, instructions, names) is put
// on the page with textContent / text nodes, never parsed as HTML; the server's CSP forbids inline
// script, so nothing in the data can run.
"use strict";

const LETTERS = "abcdefghijklmnopqrstuvwxyz";
const PAIRWISE = [
  ["A", "A is better", ["1", "a"]],
  ["B", "B is better", ["2", "b"]],
  ["tie", "Tie", ["3", "t"]],
  ["both_bad", "Both bad", ["4", "x"]],
];
const state = { me: null, item: null, answers: {}, started: 0, active: 0, busy: false, current: {} };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// Text with ``` fenced code blocks: prose keeps its whitespace, code goes into <pre>.
// Characters no reader sees (Unicode format characters: zero-width spaces and joiners, bidi
// overrides and isolates, the BOM, the soft hyphen) are shown as visible marks, so that what a
// labeler reads is what is stored: "B" and "B" + U+200B look different, and an override cannot
// reorder the text on the screen.
const INVISIBLE = /\p{Cf}/gu;

function shown(text) {
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(INVISIBLE)) {
    if (match.index > last) parts.push(text.slice(last, match.index));
    const code = "U+" + match[0].codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
    parts.push(el("span", { class: "invisible", title: `invisible character ${code}` }, `\u27e8${code}\u27e9`));
    last = match.index + match[0].length;
  }
  if (last < text.length) parts.push(text.slice(last));
  return parts;
}

function richText(text) {
  const box = el("div", { class: "text" });
  if (text === "") {
    box.append(el("span", { class: "empty" }, "(empty)"));
    return box;
  }
  const parts = text.split("```");
  parts.forEach((part, i) => {
    if (i % 2 === 1 && i < parts.length - 1) {
      const newline = part.indexOf("\n");
      const lang = newline > 0 ? part.slice(0, newline).trim() : "";
      const code = newline >= 0 && /^[\w+#.-]*$/.test(lang) ? part.slice(newline + 1) : part;
      box.append(el("pre", { class: "code", title: lang }, el("code", {}, ...shown(code))));
    } else {
      let prose = i % 2 === 1 ? "```" + part : part;
      // Blank lines around a code block would double the block's own margin.
      if (i > 0) prose = prose.replace(/^\n+/, "");
      if (i < parts.length - 1) prose = prose.replace(/\n+$/, "");
      if (prose) box.append(el("span", { class: "prose" }, ...shown(prose)));
    }
  });
  return box;
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, { credentials: "same-origin", ...init });
  if (response.status === 401) { window.location.href = "/login"; throw new Error("logged out"); }
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function say(text, error = false) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = error ? "error" : "";
}

function showProgress(progress) {
  const share = progress.needed ? progress.submitted / progress.needed : 0;
  document.getElementById("bar").style.width = `${Math.min(100, 100 * share).toFixed(1)}%`;
  document.getElementById("counts").textContent =
    `${progress.submitted} / ${progress.needed} judgments · yours: ${progress.mine}`;
}

// ------------------------------------------------------------------ rendering an item

function render(data) {
  showProgress(data.progress);
  state.item = data.done ? null : data.item;
  document.getElementById("task").hidden = data.done;
  document.getElementById("done").hidden = !data.done;
  if (data.done) return;
  const item = data.item;
  state.answers = {};
  state.current = {};
  state.started = performance.now();
  const prompt = document.getElementById("prompt");
  prompt.replaceChildren();
  if (typeof item.prompt === "string") prompt.append(richText(item.prompt));
  else for (const m of item.prompt) prompt.append(el("div", { class: "msg" }, el("div", { class: "role" }, m.role), richText(m.content)));
  const cards = document.getElementById("completions");
  cards.replaceChildren(...item.completions.map((text, p) =>
    el("article", { class: "card", "data-position": p }, el("h3", {}, LETTERS[p].toUpperCase()), richText(text))));
  const box = document.getElementById("questions");
  box.replaceChildren(...state.me.questions.map((q, i) => renderQuestion(q, i, item)));
  drawRanking();
  underline("rating", 0);
  underline("label", 0);
  activate(0);
  window.scrollTo(0, 0);
}

function section(q, index, title, keys, ...body) {
  const node = el("div", { class: "question", "data-question": q },
    el("h3", {}, title, " ", el("span", { class: "help" }, keys)), ...body);
  node.addEventListener("click", () => activate(index));
  return node;
}

function renderQuestion(q, index, item) {
  const n = item.completions.length;
  if (q === "pairwise") {
    const buttons = PAIRWISE.map(([value, text, keys]) =>
      el("button", { type: "button", "data-choice": value, onclick: () => choosePair(value, false) }, text, " ", el("kbd", {}, keys[0])));
    return section(q, index, "Which is better?", "keys 1 2 3 4 (or a b t x)", el("div", { class: "choices" }, ...buttons));
  }
  if (q === "ranking") {
    state.current.ranking = [...Array(n).keys()];
    state.current.picked = [];
    const list = el("ol", { class: "ranking", id: "ranking" });
    const confirm = el("button", { type: "button", onclick: () => { state.answers.ranking = [...state.current.ranking]; drawRanking(); } }, "This order is right ", el("kbd", {}, "="));
    const node = section(q, index, "Rank them, best first", `type the letters best to worst (${LETTERS.slice(0, n)}), drag, or use the arrows; Backspace restarts`, list, confirm);
    return node;
  }
  if (q === "rating") {
    state.current.rating = 0;
    const [low, high] = state.me.scale;
    const step = state.me.scale_step;
    const values = [];
    if (step && (high - low) / step <= 10) for (let v = low; v <= high + 1e-9; v += step) values.push(+v.toFixed(6));
    const digits = values.length > 0 && values.every((v) => Number.isInteger(v) && v >= 0 && v <= 9);
    state.answers.rating = Array(n).fill(null);
    const rows = [...Array(n).keys()].map((p) => {
      const row = el("div", { class: "rating-row", "data-position": p }, el("span", { class: "which" }, LETTERS[p].toUpperCase()));
      if (values.length) {
        for (const v of values) row.append(el("button", { type: "button", "data-value": v, onclick: () => rate(p, v) }, String(v)));
      } else {
        row.append(el("input", { type: "number", min: low, max: high, step: step || "any", onchange: (e) => rate(p, e.target.value === "" ? null : Number(e.target.value)) }));
      }
      return row;
    });
    const keys = digits ? "press a digit to rate the underlined completion; it moves on" : "type a number per completion";
    state.current.ratingDigits = digits;
    return section(q, index, `Rate each completion (${low} to ${high})`, keys, ...rows);
  }
  if (q === "label") {
    state.current.label = 0;
    state.answers.label = Array(n).fill(null);
    const rows = [...Array(n).keys()].map((p) =>
      el("div", { class: "rating-row", "data-position": p }, el("span", { class: "which" }, LETTERS[p].toUpperCase()),
        ...state.me.labels.map((name, i) => el("button", { type: "button", "data-value": name, onclick: () => label(p, name) }, name, " ", el("kbd", {}, String(i + 1))))));
    return section(q, index, "Label each completion", "press 1..n to label the underlined completion; it moves on", ...rows);
  }
  if (q === "correction") {
    const select = el("select", { id: "correction-which" }, ...item.completions.map((_, p) => el("option", { value: p }, LETTERS[p].toUpperCase())));
    const area = el("textarea", { id: "correction-text", spellcheck: true });
    area.value = item.completions[0];
    select.onchange = () => { area.value = item.completions[Number(select.value)]; };
    return section(q, index, "Correct a completion: edit it into a better answer", "key e edits; Ctrl+Enter submits",
      el("label", {}, "completion ", select), area);
  }
  const area = el("textarea", { id: "feedback-text", placeholder: "What is good or bad about these completions?" });
  return section(q, index, "Feedback", "key f writes; Ctrl+Enter submits", area);
}

function activate(index) {
  state.active = index;
  document.querySelectorAll(".question").forEach((node, i) => node.classList.toggle("active", i === index));
}

function advance() {
  const questions = state.me.questions;
  for (let i = 0; i < questions.length; i++) {
    const q = questions[i];
    if (q === "correction" || q === "feedback") continue;
    if (!answered(q)) return activate(i);
  }
  const free = questions.findIndex((q) => q === "correction" || q === "feedback");
  if (free >= 0) activate(free);
}

function answered(q) {
  const value = state.answers[q];
  if (value === undefined || value === null) return false;
  return !Array.isArray(value) || value.every((v) => v !== null);
}

// ------------------------------------------------------------------ answering

function choosePair(value, fromKey) {
  state.answers.pairwise = value;
  document.querySelectorAll("[data-question=pairwise] button").forEach((b) => b.classList.toggle("selected", b.dataset.choice === value));
  document.querySelectorAll(".card").forEach((card) => card.classList.toggle("chosen",
    (value === "A" && card.dataset.position === "0") || (value === "B" && card.dataset.position === "1")));
  if (fromKey && state.me.questions.length === 1) return submit();
  advance();
}

function drawRanking() {
  const list = document.getElementById("ranking");
  if (!list || !state.item) return;
  const order = state.current.ranking;
  list.replaceChildren(...order.map((p, place) => {
    const li = el("li", { draggable: true, "data-position": p },
      el("span", { class: "place" }, `${place + 1}.`), el("strong", {}, LETTERS[p].toUpperCase()),
      el("span", { class: "help" }, state.item.completions[p].slice(0, 80)),
      el("button", { type: "button", "aria-label": "up", onclick: (e) => { e.stopPropagation(); move(place, -1); } }, "↑"),
      el("button", { type: "button", "aria-label": "down", onclick: (e) => { e.stopPropagation(); move(place, 1); } }, "↓"));
    li.addEventListener("dragstart", (e) => { e.dataTransfer.setData("text/plain", String(place)); li.classList.add("dragging"); });
    li.addEventListener("dragend", () => li.classList.remove("dragging"));
    li.addEventListener("dragover", (e) => e.preventDefault());
    li.addEventListener("drop", (e) => {
      e.preventDefault();
      const from = Number(e.dataTransfer.getData("text/plain"));
      const [moved] = order.splice(from, 1);
      order.splice(place, 0, moved);
      state.answers.ranking = [...order];
      drawRanking();
    });
    return li;
  }));
  const done = state.answers.ranking !== undefined;
  list.closest(".question").querySelector("h3").dataset.done = done ? "yes" : "no";
}

function move(place, delta) {
  const order = state.current.ranking;
  const to = place + delta;
  if (to < 0 || to >= order.length) return;
  [order[place], order[to]] = [order[to], order[place]];
  state.answers.ranking = [...order];
  drawRanking();
}

function pickRank(p) {
  const picked = state.current.picked;
  const n = state.item.completions.length;
  if (picked.includes(p)) return;
  picked.push(p);
  if (picked.length === n - 1) picked.push([...Array(n).keys()].find((x) => !picked.includes(x)));
  const rest = [...Array(n).keys()].filter((x) => !picked.includes(x));
  state.current.ranking = [...picked, ...rest];
  if (picked.length === n) {
    state.answers.ranking = [...picked];
    state.current.picked = [];
    drawRanking();
    return advance();
  }
  drawRanking();
}

function markRow(q, p, value) {
  document.querySelectorAll(`[data-question=${q}] .rating-row[data-position="${p}"] button`).forEach((b) =>
    b.classList.toggle("selected", b.dataset.value === String(value)));
}

function underline(q, p) {
  document.querySelectorAll(`[data-question=${q}] .rating-row`).forEach((row) => row.classList.toggle("current", row.dataset.position === String(p)));
}

// A per-completion answer (rating or label): store it, mark it, move the underline on.
function setEach(q, p, value) {
  state.answers[q][p] = value;
  markRow(q, p, value);
  state.current[q] = Math.min(p + 1, state.answers[q].length - 1);
  underline(q, state.current[q]);
  if (answered(q)) advance();
}

const rate = (p, value) => setEach("rating", p, value);
const label = (p, name) => setEach("label", p, name);

function collect() {
  const answer = {};
  for (const q of state.me.questions) {
    if (q === "correction") {
      answer.correction = { position: Number(document.getElementById("correction-which").value), text: document.getElementById("correction-text").value };
    } else if (q === "feedback") {
      answer.feedback = document.getElementById("feedback-text").value;
    } else if (!answered(q)) {
      throw new Error(`answer the ${q} question first`);
    } else {
      answer[q] = state.answers[q];
    }
  }
  return answer;
}

async function submit() {
  if (!state.item || state.busy) return;
  let answer;
  try { answer = collect(); } catch (err) { return say(err.message, true); }
  await act(async () => {
    const seconds = (performance.now() - state.started) / 1000;
    await api("/api/submit", { item_id: state.item.id, answer, seconds });
    say("Saved.");
    await load();
  });
}

async function skip() {
  if (!state.item || state.busy) return;
  await act(async () => { await api("/api/skip", { item_id: state.item.id }); say("Skipped."); await load(); });
}

async function undo() {
  if (state.busy) return;
  await act(async () => { await api("/api/undo", {}); say("Your last submission was withdrawn; answer it again."); await load(); });
}

async function act(work) {
  state.busy = true;
  try { await work(); } catch (err) { say(err.message, true); } finally { state.busy = false; }
}

async function load() {
  render(await api("/api/next"));
}

// ------------------------------------------------------------------ keyboard

function onKey(event) {
  const typing = event.target instanceof HTMLTextAreaElement || event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement;
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); return submit(); }
  if (typing) { if (event.key === "Escape") event.target.blur(); return; }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.toLowerCase();
  if (!state.item) { if (key === "u") undo(); return; }
  if (key === "enter") { event.preventDefault(); return submit(); }
  if (key === "s") return skip();
  if (key === "u") return undo();
  const q = state.me.questions[state.active];
  if (key === "e" && document.getElementById("correction-text")) { event.preventDefault(); return document.getElementById("correction-text").focus(); }
  if (key === "f" && document.getElementById("feedback-text")) { event.preventDefault(); return document.getElementById("feedback-text").focus(); }
  const n = state.item.completions.length;
  if (q === "pairwise") {
    const hit = PAIRWISE.find(([, , keys]) => keys.includes(key));
    if (hit) choosePair(hit[0], true);
  } else if (q === "ranking") {
    const p = LETTERS.indexOf(key);
    if (p >= 0 && p < n) pickRank(p);
    else if (key === "backspace") { state.current.picked = []; delete state.answers.ranking; drawRanking(); }
    else if (key === "=") { state.answers.ranking = [...state.current.ranking]; drawRanking(); advance(); }
  } else if (q === "rating" && state.current.ratingDigits && /^[0-9]$/.test(key)) {
    const value = Number(key);
    const [low, high] = state.me.scale;
    if (value >= low && value <= high) rate(state.current.rating, value);
  } else if (q === "label" && /^[1-9]$/.test(key)) {
    const name = state.me.labels[Number(key) - 1];
    if (name !== undefined) label(state.current.label, name);
  }
}

async function start() {
  try {
    state.me = await api("/api/me");
  } catch (err) { return say(err.message, true); }
  document.getElementById("who").textContent = `${state.me.name} (${state.me.role})`;
  document.getElementById("owner-link").hidden = state.me.role !== "owner";
  if (state.me.instructions) {
    document.getElementById("instructions").textContent = state.me.instructions;
    document.getElementById("instructions-box").hidden = false;
  }
  document.getElementById("help").textContent =
    "Keys: Enter submits (Ctrl+Enter inside a text box), s skips, u undoes your last submission; click a question to direct the keys to it.";
  document.getElementById("submit").onclick = submit;
  document.getElementById("skip").onclick = skip;
  document.getElementById("undo").onclick = undo;
  document.getElementById("undo-done").onclick = undo;
  document.addEventListener("keydown", onKey);
  try { await load(); } catch (err) { say(err.message, true); }
  document.body.dataset.ready = "yes";
}

start();
