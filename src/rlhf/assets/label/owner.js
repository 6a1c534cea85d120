// The owner page: progress, agreement, annotators, export, new annotators. Data goes on the page
// only through textContent.
"use strict";

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

const fmt = (value, digits = 3) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));
const pct = (value) => (value === null || value === undefined ? "–" : `${(100 * value).toFixed(0)}%`);

async function api(path, body) {
  const init = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, { credentials: "same-origin", ...init });
  if (response.status === 401) { window.location.href = "/login"; throw new Error("logged out"); }
  if (!response.ok) throw new Error((await response.json()).error || response.statusText);
  return response;
}

function say(text, error = false) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = error ? "error" : "";
}

async function refresh() {
  const stats = await (await api("/api/stats")).json();
  const p = stats.progress;
  document.getElementById("bar").style.width = `${p.needed ? Math.min(100, (100 * p.submitted) / p.needed) : 0}%`;
  document.getElementById("progress").textContent =
    `${p.submitted} of ${p.needed} judgments (${p.items} items × overlap ${stats.config.overlap}); ` +
    `${p.complete_items} items complete, ${p.started_items} started; ${p.gold_items} gold items` +
    (p.judge_verdicts ? `; ${p.judge_verdicts} LLM judge verdicts (not counted above).` : ".");
  const rows = Object.entries(stats.questions).map(([q, s]) => {
    if (s.units === undefined) return el("tr", {}, el("td", {}, q), el("td", {}, s.level), el("td", {}, `${s.answers} answers`), el("td"), el("td"), el("td"), el("td"), el("td"));
    let note = "";
    if (s.position_bias && s.position_bias.shown_first_won !== null) note = `shown first won ${pct(s.position_bias.shown_first_won)} of ${s.position_bias.decisive} decisive answers`;
    return el("tr", { "data-question": q }, el("td", {}, q), el("td", {}, s.level), el("td", {}, `${s.units_with_two_or_more} of ${s.units}`),
      el("td", {}, fmt(s.raw_agreement)), el("td", {}, fmt(s.cohen_kappa)), el("td", {}, fmt(s.fleiss_kappa)), el("td", {}, fmt(s.krippendorff_alpha)), el("td", {}, note));
  });
  document.querySelector("#agreement tbody").replaceChildren(...rows);
  document.querySelector("#annotators tbody").replaceChildren(...stats.annotators.map((a) => el("tr", {},
    el("td", {}, a.name), el("td", {}, a.role), el("td", {}, a.submitted), el("td", {}, a.skipped), el("td", {}, fmt(a.median_seconds, 1)),
    el("td", {}, Object.entries(a.agreement_with_majority).map(([q, v]) => `${q} ${pct(v)}`).join(", ") || "–"),
    el("td", {}, a.gold_answered ? `${pct(a.gold_accuracy)} of ${a.gold_answered}` : "–"))));
  const judgeRows = stats.judges.flatMap((j) => Object.entries(j.agreement).map(([q, a]) => el("tr", { "data-judge": j.name, "data-question": q },
    el("td", {}, j.name), el("td", {}, j.items), el("td", {}, `${j.abstained} (${pct(j.items ? j.abstained / j.items : null)})`),
    el("td", {}, j.inconsistent), el("td", {}, q), el("td", {}, `${a.units} (${a.items})`), el("td", {}, pct(a.raw_agreement)),
    el("td", {}, pct(a.disagreement)), el("td", {}, fmt(a.cohen_kappa)))));
  document.querySelector("#judges tbody").replaceChildren(...judgeRows);
  document.getElementById("judges-section").hidden = stats.judges.length === 0;
  document.body.dataset.ready = "yes";
}

async function download(event) {
  event.preventDefault();
  const format = document.getElementById("format").value;
  const resolve = document.getElementById("resolve").value;
  const incomplete = document.getElementById("incomplete").checked ? "1" : "0";
  try {
    const response = await api(`/api/export?format=${encodeURIComponent(format)}&resolve=${encodeURIComponent(resolve)}&include_incomplete=${incomplete}&sources=${encodeURIComponent(document.getElementById("sources").value)}`);
    const report = JSON.parse(response.headers.get("X-Export-Report"));
    const left = Object.entries(report.left_out).map(([why, n]) => `${n} ${why}`).join(", ");
    document.getElementById("export-report").textContent = `${report.rows} rows from ${report.used_items} of ${report.items} items` + (left ? `; left out: ${left}` : "");
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: `${format}-${resolve}.jsonl` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) { say(err.message, true); }
}

async function add(event) {
  event.preventDefault();
  try {
    const name = document.getElementById("name").value;
    const role = document.getElementById("role").value;
    const data = await (await api("/api/annotators", { name, role })).json();
    const link = el("input", { readOnly: true, value: data.link, size: 80 });
    document.getElementById("added").replaceChildren(`Send ${data.name} this personal link (shown once): `, link);
    await refresh();
  } catch (err) { say(err.message, true); }
}

document.getElementById("export").addEventListener("submit", download);
document.getElementById("add").addEventListener("submit", add);
refresh().catch((err) => say(err.message, true));
