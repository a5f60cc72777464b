/* livecast planner page: plain JS, no build step, no network access beyond this service.
 *
 * The form builds a SessionPlan (features/plan.py) and posts it to the service:
 *   POST /v1/forecast {plans: [plan], drivers: true}
 *   POST /v1/compare  {base: plan, variants: [{name, plan}]}
 *   POST /v1/suggest  {base: plan, space: {...}, objective, top_k}
 * The service validates everything; a 4xx body {error, detail: [{loc, msg, type}]} is shown
 * beside the form with the failing fields highlighted. Every number shown carries its exact
 * value in a data-value attribute (and its path in data-field).
 */
"use strict";

const CATEGORIES = [
  ["beauty", "Beauty 美妆"], ["apparel", "Apparel 服饰"], ["accessories", "Accessories 配饰"],
  ["jewellery", "Jewellery 珠宝"], ["food", "Food 食品"], ["health", "Health 保健"],
  ["home", "Home 家居"], ["furniture", "Furniture 家具"], ["electronics", "Electronics 数码"],
  ["maternal_baby", "Mother & baby 母婴"], ["other", "Other"],
];
const PLATFORM_NAMES = {
  douyin: "Douyin 抖音", kuaishou: "Kuaishou 快手", channels: "WeChat Channels 视频号",
  taobao: "Taobao Live 淘宝直播", tiktok: "TikTok Shop LIVE", other: "Other platform",
};
const FAMILY_NAMES = {
  topic: "Topic & title", slot: "Time slot", mix: "Product mix", promo: "Promo mechanics",
  warmup: "Warm-up", room: "Room history",
};
const TARGETS = [
  ["viewers", "Viewers 场观", "count"],
  ["orders", "Orders 订单", "count"],
  ["gmv", "GMV 成交额", "cny"],
];
const INT_FIELDS = [
  "followers_at_start", "lottery_count", "red_envelope_count", "flash_sale_rounds",
  "warmup_videos", "community_pushes",
];
const FLOAT_FIELDS = ["planned_duration_min", "coupon_value", "discount_depth", "paid_promo_budget"];
const TEXT_FIELDS = ["room_id", "host_id", "platform", "session_type", "title", "room_category"];
const EXAMPLE_SKUS = [
  { sku_id: "sku-1", category: "beauty", list_price: 299, live_price: 199, stock: 800, is_new_launch: false },
  { sku_id: "sku-2", category: "beauty", list_price: 159, live_price: 99, stock: 1500, is_new_launch: false },
  { sku_id: "sku-3", category: "beauty", list_price: 499, live_price: 399, stock: 300, is_new_launch: true },
];
const VARIANT_FIELDS = [
  ["start_hour", "int"], ["planned_duration_min", "float"], ["lottery_count", "int"],
  ["red_envelope_count", "int"], ["flash_sale_rounds", "int"], ["coupon_value", "float"],
  ["paid_promo_budget", "float"],
];

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

// ---------------------------------------------------------------------------- formatting

const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const money2Fmt = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

function fmtCount(v) { return intFmt.format(v); }
function fmtCNY(v) { return "¥" + intFmt.format(v); }
function fmtCNY2(v) { return "¥" + money2Fmt.format(v); }
function fmtPct(v) { return (v * 100).toFixed(2) + "%"; }
function fmtWan(v) { return v >= 10000 ? (v / 10000).toFixed(1) + "万" : ""; }
function fmtBy(kind, v) { return kind === "cny" ? fmtCNY(v) : fmtCount(v); }
function fmtMult(m) { return "×" + m.toFixed(2); }
function fmtSigned(ratio) {
  if (ratio === null || ratio === undefined) return "n/a";
  const pct = (ratio - 1) * 100;
  const sign = pct > 0.05 ? "+" : pct < -0.05 ? "−" : "±";
  return sign + Math.abs(pct).toFixed(1) + "%";
}
function trendClass(x) { return x > 1e-9 ? "up" : x < -1e-9 ? "down" : "flat"; }

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

/** A number shown on the page: text formatted, exact value in data-value. */
function num(field, value, text, cls = "") {
  return `<span class="num ${cls}" data-field="${esc(field)}" data-value="${String(value)}">${esc(text)}</span>`;
}

function humanFeature(name) {
  const [fam, rest] = name.includes("__") ? name.split("__", 2) : ["", name];
  const label = rest.replace(/_/g, " ");
  return (FAMILY_NAMES[fam] ? FAMILY_NAMES[fam].split(" ")[0].toLowerCase() + " · " : "") + label;
}

function fmtDriverValue(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? intFmt.format(v) : v.toFixed(2);
  return String(v);
}

// ---------------------------------------------------------------------------- the form

function fillCategorySelect(sel, withBlank) {
  const keep = sel.value;
  sel.innerHTML = (withBlank ? `<option value="">from products</option>` : "") +
    CATEGORIES.map(([v, l]) => `<option value="${v}">${esc(l)}</option>`).join("");
  if (keep) sel.value = keep;
}

function addSkuRow(sku) {
  const s = sku || { sku_id: "", category: "beauty", list_price: "", live_price: "", stock: "", is_new_launch: false };
  const tr = document.createElement("tr");
  tr.innerHTML = `
    <td><input class="sku-id" name="sku_id" type="text" value="${esc(s.sku_id)}"></td>
    <td><select class="sku-cat" name="category"></select></td>
    <td><input class="sku-list" name="list_price" type="number" step="any" value="${esc(s.list_price)}"></td>
    <td><input class="sku-live" name="live_price" type="number" step="any" value="${esc(s.live_price)}"></td>
    <td><input class="sku-stock" name="stock" type="number" step="1" value="${esc(s.stock ?? "")}"></td>
    <td class="center"><input class="sku-new" name="is_new_launch" type="checkbox" ${s.is_new_launch ? "checked" : ""}></td>
    <td><button type="button" class="icon remove-sku" title="Remove SKU" aria-label="Remove SKU">×</button></td>`;
  const sel = $("select", tr);
  fillCategorySelect(sel, false);
  sel.value = s.category;
  $(".remove-sku", tr).addEventListener("click", () => tr.remove());
  $("#sku-rows").appendChild(tr);
}

function resetPlan() {
  const form = $("#plan-form");
  form.reset();
  $("#sku-rows").innerHTML = "";
  EXAMPLE_SKUS.forEach(addSkuRow);
  clearErrors();
}

/** Raw number from an input: undefined when blank, NaN when not a number. */
function readNumber(input) {
  if (input.validity && input.validity.badInput) return NaN;
  const raw = input.value.trim();
  if (raw === "") return undefined;
  return Number(raw);
}

/** The draft plan (a SessionPlan) as the form shows it. Blank optional fields are omitted. */
function planFromForm() {
  const form = $("#plan-form");
  const plan = {};
  const problems = [];
  for (const f of TEXT_FIELDS) {
    const v = form.elements[f].value.trim();
    if (v !== "" || f === "room_id" || f === "title") plan[f] = v;
  }
  if (plan.room_category === "") delete plan.room_category;
  const date = form.elements.start_date.value;
  const clock = form.elements.start_clock.value;
  if (!date || !clock) problems.push({ loc: ["start_time"], msg: "enter a start date and time" });
  plan.start_time = `${date}T${clock.length === 5 ? clock + ":00" : clock}${form.elements.start_tz.value}`;
  for (const f of [...FLOAT_FIELDS, ...INT_FIELDS]) {
    const v = readNumber(form.elements[f]);
    if (Number.isNaN(v)) problems.push({ loc: [f], msg: "not a number" });
    else if (v !== undefined) plan[f] = v;
  }
  const rows = $$("#sku-rows tr");
  if (rows.length) {
    plan.products = rows.map((tr, i) => {
      const p = {
        sku_id: $(".sku-id", tr).value.trim(),
        category: $(".sku-cat", tr).value,
      };
      for (const [cls, key] of [["sku-list", "list_price"], ["sku-live", "live_price"], ["sku-stock", "stock"]]) {
        const v = readNumber($("." + cls, tr));
        if (Number.isNaN(v)) problems.push({ loc: ["products", i, key], msg: "not a number" });
        else if (v !== undefined) p[key] = v;
      }
      p.is_new_launch = $(".sku-new", tr).checked;
      return p;
    });
  }
  return { plan, problems };
}

// ---------------------------------------------------------------------------- errors

function clearErrors() {
  for (const id of ["#form-errors", "#compare-errors", "#suggest-errors", "#review-errors"]) {
    const box = $(id);
    box.hidden = true;
    box.innerHTML = "";
  }
  $$(".invalid").forEach((el) => el.classList.remove("invalid"));
  $$(".field-error").forEach((el) => el.remove());
}

/** The form control a failing loc points at (plan fields, SKU cells, start time). */
function controlFor(loc) {
  const parts = loc.filter((p) => p !== "body");
  // a variant of the compare view: its own cells, else the base plan field it copies
  if (parts[0] === "variants" && typeof parts[1] === "number") {
    const tr = $$("#variant-rows tr")[parts[1]];
    const key = parts[2] === "name" ? "name" : parts[3] === "start_time" ? "start_hour" : parts[3];
    if (tr && key === "name") return $(".v-name", tr);
    if (tr && key && $(`[data-key="${key}"]`, tr)) return $(`[data-key="${key}"]`, tr);
    if (tr && parts.length <= 2) return $(".v-name", tr);
  }
  if (parts[0] === "actual" && typeof parts[1] === "string") return $("#a-" + parts[1]);
  // the suggest search space
  if (parts[0] === "space" || parts[0] === "top_k" || parts[0] === "objective") {
    const key = parts.filter((p) => typeof p === "string").join(".");
    const map = {
      "space.start_hour.min": "#s-hour-min", "space.start_hour.max": "#s-hour-max",
      "space.start_hour": "#s-hour-min", "space.duration_min.min": "#s-dur-min",
      "space.duration_min.max": "#s-dur-max", "space.duration_min.step": "#s-dur-step",
      "space.duration_min": "#s-dur-min", "space.paid_promo_budget": "#s-budgets",
      "top_k": "#s-top-k", objective: "#s-objective",
    };
    return map[key] ? $(map[key]) : null;
  }
  const pi = parts.indexOf("products");
  if (pi >= 0 && typeof parts[pi + 1] === "number") {
    const tr = $$("#sku-rows tr")[parts[pi + 1]];
    const key = parts.slice(pi + 2).find((p) => typeof p === "string");
    if (tr) return (key && $(`[name="${key}"]`, tr)) || tr;
  }
  const form = $("#plan-form");
  for (let i = parts.length - 1; i >= 0; i--) {
    const p = parts[i];
    if (typeof p !== "string") continue;
    if (p === "start_time") return form.elements.start_date;
    if (form.elements[p] && form.elements[p].tagName) return form.elements[p];
  }
  return null;
}

function locText(loc) {
  return loc.filter((p) => p !== "body")
    .map((p, i) => (typeof p === "number" ? `[${p}]` : (i ? "." : "") + p)).join("") || "request";
}

/** Pull {loc, msg} items out of any 4xx body (the service's detail list, or plain text). */
function errorItems(body, status) {
  if (body && Array.isArray(body.detail) && body.detail.length) {
    return body.detail.map((d) => ({ loc: Array.isArray(d.loc) ? d.loc : [], msg: d.msg || String(d) }));
  }
  const text = body && (body.error || body.detail || body.message)
    ? String(body.error || body.detail || body.message)
    : typeof body === "string" ? body : `HTTP ${status}`;
  // pydantic text: "<path>\n  <message> [type=...]" pairs
  const items = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length - 1; i++) {
    if (/^\S/.test(lines[i]) && /^\s+\S/.test(lines[i + 1]) && !/validation error/.test(lines[i])) {
      const loc = lines[i].trim().split(".").map((p) => (/^\d+$/.test(p) ? Number(p) : p));
      items.push({ loc, msg: lines[i + 1].trim().replace(/\s*\[type=.*$/, "") });
    }
  }
  return items.length ? items : [{ loc: [], msg: text }];
}

function showErrors(boxId, status, body, summary) {
  const items = errorItems(body, status);
  const box = $(boxId);
  const where = status ? `HTTP ${status}` : "checked before sending";
  box.innerHTML = `<div class="err-title">${esc(summary)} (${where})</div><ul>` +
    items.map((it) => `<li data-testid="error-item"><code>${esc(locText(it.loc))}</code> ${esc(it.msg)}</li>`).join("") +
    "</ul>";
  box.hidden = false;
  for (const it of items) {
    const el = controlFor(it.loc);
    if (!el) continue;
    el.classList.add("invalid");
    const label = el.closest("label.field");
    if (label && !$(".field-error", label)) {
      label.insertAdjacentHTML("beforeend", `<small class="field-error">${esc(it.msg)}</small>`);
    }
  }
  if (boxId !== "#form-errors") {
    // the plan is the form: repeat the errors about plan fields beside it
    const planItems = items.filter((it) => {
      const el = controlFor(it.loc);
      return el && el.closest("#plan-form");
    });
    if (planItems.length) {
      $("#form-errors").innerHTML = `<div class="err-title">${esc(summary)} (${where})</div><ul>` +
        planItems.map((it) => `<li><code>${esc(locText(it.loc))}</code> ${esc(it.msg)}</li>`).join("") + "</ul>";
      $("#form-errors").hidden = false;
    }
  }
}

// ---------------------------------------------------------------------------- API

async function post(path, payload) {
  $("#request-json").textContent = JSON.stringify(payload, null, 2);
  let resp;
  try {
    resp = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(payload),
    });
  } catch (err) {
    return { ok: false, status: 0, body: { error: "the service did not answer: " + err.message } };
  }
  const text = await resp.text();
  let body;
  try { body = JSON.parse(text); } catch { body = text; }
  return { ok: resp.ok, status: resp.status, body };
}

/** Count answers shown in a view (tests wait for the count to move). */
function bump(el) {
  el.dataset.renders = String(Number(el.dataset.renders || 0) + 1);
}

function setBusy(btn, busy) {
  btn.disabled = busy;
  btn.classList.toggle("busy", busy);
}

function modelVersion(model) {
  if (!model) return "";
  const parts = [model.train_id ? `train ${model.train_id}` : model.bundle];
  const versions = Object.entries(model.versions || {});
  if (versions.length) parts.push(versions.map(([k, v]) => `${k} v${v}`).join(" · "));
  if (model.trained_until) parts.push(`data to ${String(model.trained_until).slice(0, 10)}`);
  if (model.history_as_of) parts.push(`history to ${String(model.history_as_of).slice(0, 10)}`);
  return parts.join(" · ");
}

function showModel(model) {
  if (!model) return;
  const versions = model.versions && Object.keys(model.versions).length
    ? " · " + Object.entries(model.versions).map(([k, v]) => `${k} v${v}`).join(", ") : "";
  // the champion's version, and how fresh the history it forecasts from is
  const fresh = model.history_as_of ? ` · history to ${String(model.history_as_of).slice(0, 10)}` : "";
  const text = `${model.name || "model"} · ${model.bundle}${versions}${fresh}`;
  const el = $("#model-info");
  el.textContent = "Model: " + text;
  el.dataset.bundle = model.bundle || "";
  el.dataset.trainId = model.train_id || "";
  el.dataset.historyAsOf = model.history_as_of || "";
  el.title = model.trained_until ? `trained until ${model.trained_until}` : "";
}

// ---------------------------------------------------------------------------- charts

/** P10–P90 band with the P50 marker, on a 0..max scale. */
function intervalSvg(iv, kind, max, actual) {
  const W = 240, H = 50, L = 8, R = 8, y = 24;
  const x = (v) => L + (W - L - R) * (max > 0 ? v / max : 0);
  const x10 = x(iv.p10), x50 = x(iv.p50), x90 = x(iv.p90);
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((t) =>
    `<line x1="${x(t * max)}" x2="${x(t * max)}" y1="${y - 9}" y2="${y + 9}" class="tick"/>`).join("");
  return `<svg class="interval" viewBox="0 0 ${W} ${H}" role="img"
      aria-label="P10 ${esc(fmtBy(kind, iv.p10))}, P50 ${esc(fmtBy(kind, iv.p50))}, P90 ${esc(fmtBy(kind, iv.p90))}">
    <line x1="${L}" x2="${W - R}" y1="${y}" y2="${y}" class="track"/>${ticks}
    <rect x="${x10}" y="${y - 7}" width="${Math.max(2, x90 - x10)}" height="14" rx="7" class="band"/>
    <line x1="${x50}" x2="${x50}" y1="${y - 11}" y2="${y + 11}" class="median"/>
    <circle cx="${x50}" cy="${y}" r="4.5" class="median-dot"/>
    ${actual === undefined ? `<text x="${x50}" y="9" class="lbl" text-anchor="middle">P50</text>` : `
    <line x1="${x(actual)}" x2="${x(actual)}" y1="${y - 12}" y2="${y + 12}" class="actual-line"/>
    <text x="${x(actual)}" y="9" class="lbl actual-lbl" text-anchor="${x(actual) > W - 30 ? "end" : "middle"}">actual</text>`}
    <text x="${x10}" y="${H - 2}" class="lbl" text-anchor="${x10 < 40 ? "start" : "middle"}">P10</text>
    <text x="${x90}" y="${H - 2}" class="lbl" text-anchor="${x90 > W - 40 ? "end" : "middle"}">P90</text>
  </svg>`;
}

/** Diverging bars of multipliers on a log scale around ×1. */
function familiesSvg(multipliers) {
  const entries = Object.entries(multipliers);
  const W = 360, rowH = 26, top = 6, labelW = 118, valW = 52;
  const H = top + rowH * entries.length + 4;
  const span = Math.max(Math.log(1.5), ...entries.map(([, m]) => Math.abs(Math.log(Math.max(m, 1e-6)))));
  const mid = labelW + (W - labelW - valW) / 2;
  const half = (W - labelW - valW) / 2 - 4;
  const rows = entries.map(([fam, m], i) => {
    const l = Math.log(Math.max(m, 1e-6));
    const w = Math.abs(l) / span * half;
    const yy = top + i * rowH;
    const cls = trendClass(l);
    return `<g data-family="${esc(fam)}">
      <text x="${labelW - 8}" y="${yy + 16}" text-anchor="end" class="lbl-dark">${esc(FAMILY_NAMES[fam] || fam)}</text>
      <rect x="${l >= 0 ? mid : mid - w}" y="${yy + 5}" width="${Math.max(1.5, w)}" height="14" rx="3" class="bar ${cls}"/>
      <text x="${W - 2}" y="${yy + 16}" text-anchor="end" class="val ${cls}">${esc(fmtMult(m))}</text>
    </g>`;
  }).join("");
  return `<svg class="families" viewBox="0 0 ${W} ${H}" role="img" aria-label="Contribution by feature family">
    <line x1="${mid}" x2="${mid}" y1="0" y2="${H}" class="axis"/>${rows}</svg>`;
}

// ---------------------------------------------------------------------------- forecast view

function markStale() {
  const root = $("#forecast-result");
  if (root.hidden) return;
  root.classList.add("stale");
  $("#stale-note").hidden = false;
}

function renderForecast(fc, model) {
  $("#forecast-empty").hidden = true;
  const root = $("#forecast-result");
  root.hidden = false;
  root.classList.remove("stale");
  $("#stale-note").hidden = true;
  root.dataset.sessionId = fc.session_id;
  const { plan } = planFromForm();
  $("#fc-title").textContent = plan.title ? plan.title : "Forecast";
  const when = plan.start_time ? plan.start_time.replace("T", " ").replace(/:00([+-])/, " $1") : "";
  $("#fc-sub").innerHTML = `${esc(fc.room_id)} · ${esc(PLATFORM_NAMES[plan.platform] || plan.platform)} · ${esc(when)} · ${esc(plan.planned_duration_min ?? "")} min`;
  const badge = $("#fc-badge");
  badge.textContent = fc.cold_start ? "Cold start: new room" : "Known room";
  badge.className = "badge " + (fc.cold_start ? "cold" : "warm");
  badge.dataset.value = String(fc.cold_start);
  badge.title = fc.cold_start
    ? "No history for this room: forecast from the plan, platform, category and followers; the range is wider."
    : "Forecast uses this room's earlier sessions.";

  $("#fc-kpis").innerHTML = TARGETS.map(([key, label, kind]) => {
    const iv = fc[key];
    const wan = key === "gmv" ? fmtWan(iv.p50) : "";
    return `<div class="kpi" data-target="${key}">
      <div class="kpi-label">${esc(label)}</div>
      <div class="kpi-value">${num(key + ".p50", iv.p50, fmtBy(kind, iv.p50))}
        ${wan ? `<span class="wan">≈ ${esc(wan)}</span>` : ""}</div>
      ${intervalSvg(iv, kind, iv.p90 * 1.08)}
      <div class="kpi-range">P10 ${num(key + ".p10", iv.p10, fmtBy(kind, iv.p10))}
        <span class="dash">–</span> P90 ${num(key + ".p90", iv.p90, fmtBy(kind, iv.p90))}</div>
    </div>`;
  }).join("");

  const held = fc.held || [];
  const heldNote = $("#held-note");
  heldNote.hidden = !held.length;
  heldNote.dataset.value = held.join(",");
  heldNote.textContent = held.length
    ? `Held to the room's range: ${held.join(", ")}. The plan pushed the model past anything `
      + "this room's sessions support (more than 10× its recent median, or a room never seen "
      + "beyond the largest session in the data); the drivers explain the forecast before the hold."
    : "";

  $("#fc-rates").innerHTML = `
    <div class="rate"><span class="kpi-label">Conversion (orders / viewers)</span>
      ${num("conversion", fc.conversion, fmtPct(fc.conversion), "rate-value")}</div>
    <div class="rate"><span class="kpi-label">Average order value</span>
      ${num("aov", fc.aov, fmtCNY2(fc.aov), "rate-value")}</div>
    <div class="rate"><span class="kpi-label">Model version</span>
      <span class="rate-value small" data-testid="model-version">${esc(modelVersion(model))}</span></div>`;

  const ex = fc.explanation;
  if (ex) {
    $("#fc-families").innerHTML = familiesSvg(ex.multipliers) +
      Object.entries(ex.multipliers).map(([f, m]) =>
        `<span hidden data-field="families.${esc(f)}" data-value="${m}"></span>`).join("");
    $("#fc-drivers").innerHTML = `<table class="drivers"><thead><tr><th>Top driver</th><th>Value</th><th>Effect</th></tr></thead><tbody>` +
      ex.drivers.map((d, i) => `<tr data-feature="${esc(d.feature)}">
        <td>${esc(humanFeature(d.feature))}</td>
        <td class="mono">${esc(fmtDriverValue(d.value))}</td>
        <td class="${trendClass(d.contribution)}">${num(`drivers.${i}.multiplier`, d.multiplier,
          (d.contribution > 0 ? "▲ " : d.contribution < 0 ? "▼ " : "") + fmtMult(d.multiplier))}</td></tr>`).join("") +
      "</tbody></table>";
  } else {
    $("#fc-families").innerHTML = `<p class="note">No drivers in this answer.</p>`;
    $("#fc-drivers").innerHTML = "";
  }
}

async function onForecast(ev) {
  ev.preventDefault();
  clearErrors();
  showView("forecast");
  const { plan, problems } = planFromForm();
  if (problems.length) {
    showErrors("#form-errors", 0, { detail: problems }, "Check the plan");
    return;
  }
  const btn = $("#forecast-btn");
  setBusy(btn, true);
  const res = await post("/v1/forecast", { plans: [plan], drivers: true });
  setBusy(btn, false);
  if (!res.ok) {
    showErrors("#form-errors", res.status, res.body, "The service rejected the plan");
    markStale();
    bump($("#view-forecast"));
    return;
  }
  showModel(res.body.model);
  renderForecast(res.body.forecasts[0], res.body.model);
  bump($("#view-forecast"));
}

// ---------------------------------------------------------------------------- compare view

function planHour(plan) { return Number(plan.start_time.slice(11, 13)); }

function withHour(startTime, hour) {
  return startTime.slice(0, 11) + String(hour).padStart(2, "0") + startTime.slice(13);
}

function addVariantRow(name, overrides = {}) {
  const { plan } = planFromForm();
  const base = { ...plan, start_hour: plan.start_time ? planHour(plan) : "" };
  const tr = document.createElement("tr");
  const n = $$("#variant-rows tr").length + 1;
  tr.innerHTML = `<td><input class="v-name" type="text" value="${esc(name || "Variant " + n)}"></td>` +
    VARIANT_FIELDS.map(([f]) => {
      const v = f in overrides ? overrides[f] : "";
      return `<td><input class="v-field" data-key="${f}" name="${f}" type="number" step="any" value="${esc(v)}" placeholder="${esc(base[f] ?? "")}"></td>`;
    }).join("") +
    `<td><button type="button" class="icon remove-variant" title="Remove variant" aria-label="Remove variant">×</button></td>`;
  $(".remove-variant", tr).addEventListener("click", () => tr.remove());
  $("#variant-rows").appendChild(tr);
}

/** Blank variant cells show the draft plan's current value. */
function refreshVariantPlaceholders() {
  const { plan } = planFromForm();
  const base = { ...plan, start_hour: plan.start_time ? planHour(plan) : "" };
  for (const input of $$("#variant-rows .v-field")) input.placeholder = String(base[input.dataset.key] ?? "");
}

function presetVariants() {
  $("#variant-rows").innerHTML = "";
  const { plan } = planFromForm();
  const h = plan.start_time ? planHour(plan) : 20;
  addVariantRow(`Start ${String((h + 22) % 24).padStart(2, "0")}:00`, { start_hour: (h + 22) % 24 });
  addVariantRow("No promos", {
    lottery_count: 0, red_envelope_count: 0, flash_sale_rounds: 0, coupon_value: 0,
  });
  addVariantRow("Double paid warm-up", { paid_promo_budget: 2 * (plan.paid_promo_budget || 5000) });
}

function variantsFromTable(base) {
  const problems = [];
  const variants = $$("#variant-rows tr").map((tr, i) => {
    const plan = { ...base };
    for (const input of $$(".v-field", tr)) {
      const key = input.dataset.key;
      const v = readNumber(input);
      if (v === undefined) continue;
      if (Number.isNaN(v)) { problems.push({ loc: ["variants", i, key], msg: "not a number" }); continue; }
      if (key === "start_hour") {
        if (!Number.isInteger(v) || v < 0 || v > 23) {
          problems.push({ loc: ["variants", i, "start_hour"], msg: "start hour must be a whole number 0–23" });
        } else plan.start_time = withHour(base.start_time, v);
      } else plan[key] = v;
    }
    return { name: $(".v-name", tr).value.trim(), plan };
  });
  return { variants, problems };
}

function deltaCell(field, d, kind) {
  const cls = trendClass(d.delta);
  return `${num(field + ".value", d.value, kind(d.value))}
    <span class="delta ${cls}" data-field="${esc(field)}.ratio" data-value="${d.ratio === null ? "" : d.ratio}">${esc(fmtSigned(d.ratio))}</span>`;
}

function renderCompare(body) {
  const rows = [
    ["viewers", "Viewers P50", fmtCount], ["orders", "Orders P50", fmtCount],
    ["gmv", "GMV P50", fmtCNY], ["conversion", "Conversion", fmtPct], ["aov", "AOV", fmtCNY2],
  ];
  const b = body.base;
  const baseVal = (k) => (typeof b[k] === "object" ? b[k].p50 : b[k]);
  const head = `<tr><th></th><th>Base plan${b.cold_start ? ' <span class="badge cold mini">cold</span>' : ""}</th>` +
    body.variants.map((v) => `<th>${esc(v.name)}</th>`).join("") + "</tr>";
  const lines = rows.map(([k, label, f]) => `<tr data-metric="${k}"><th>${label}</th>
      <td>${num(`base.${k}`, baseVal(k), f(baseVal(k)))}</td>` +
    body.variants.map((v, i) => `<td data-variant="${esc(v.name)}">${deltaCell(`variants.${i}.${k}`, v.differences[k], f)}</td>`).join("") +
    "</tr>");
  const ranges = ["viewers", "gmv"].map((k) => `<tr class="range-row"><th>${k === "gmv" ? "GMV" : "Viewers"} P10–P90</th>` +
    [b, ...body.variants.map((v) => v.forecast)].map((fc) =>
      `<td class="muted">${(k === "gmv" ? fmtCNY : fmtCount)(fc[k].p10)} – ${(k === "gmv" ? fmtCNY : fmtCount)(fc[k].p90)}</td>`).join("") + "</tr>");
  const root = $("#compare-result");
  root.innerHTML = `<table class="compare-table"><thead>${head}</thead><tbody>${lines.join("")}${ranges.join("")}</tbody></table>`;
  root.hidden = false;
}

async function onCompare() {
  clearErrors();
  const { plan, problems } = planFromForm();
  if (!$$("#variant-rows tr").length) presetVariants();
  const { variants, problems: vp } = variantsFromTable(plan);
  if (problems.length || vp.length) {
    showErrors("#compare-errors", 0, { detail: [...problems, ...vp] }, "Check the plan and variants");
    return;
  }
  const btn = $("#compare-btn");
  setBusy(btn, true);
  const res = await post("/v1/compare", { base: plan, variants, drivers: false });
  setBusy(btn, false);
  if (!res.ok) {
    showErrors("#compare-errors", res.status, res.body, "The service rejected the comparison");
    bump($("#view-compare"));
    return;
  }
  showModel(res.body.model);
  renderCompare(res.body);
  bump($("#view-compare"));
}

// ---------------------------------------------------------------------------- suggest view

function searchSpace() {
  const space = {};
  const hmin = readNumber($("#s-hour-min")), hmax = readNumber($("#s-hour-max"));
  if (hmin !== undefined || hmax !== undefined) space.start_hour = { min: hmin ?? hmax, max: hmax ?? hmin };
  if ($("#s-dur-on").checked) {
    space.duration_min = {
      min: readNumber($("#s-dur-min")), max: readNumber($("#s-dur-max")), step: readNumber($("#s-dur-step")),
    };
  }
  space.promos = $$(".s-promo").filter((c) => c.checked).map((c) => c.value);
  const budgets = $("#s-budgets").value.split(/[,，\s]+/).filter((s) => s !== "").map(Number);
  if (budgets.length) space.paid_promo_budget = budgets;
  return space;
}

function changeText(key, value) {
  if (key === "start_time") return `start ${String(value).slice(11, 16)}`;
  if (key === "planned_duration_min") return `${value} min`;
  if (key === "paid_promo_budget") return `paid ${fmtCNY(Number(value))}`;
  if (key === "coupon_value") return value ? `coupon ${fmtCNY(Number(value))}` : "no coupon";
  const names = { lottery_count: "lotteries", red_envelope_count: "red envelopes", flash_sale_rounds: "flash sales" };
  if (names[key]) return value ? `${value} ${names[key]}` : `no ${names[key]}`;
  return `${key} ${value}`;
}

function renderSuggest(body) {
  const obj = body.objective;
  const f = obj === "gmv" ? fmtCNY : fmtCount;
  const rows = body.suggestions.map((s, i) => {
    const changes = Object.entries(s.changes);
    return `<tr data-rank="${s.rank}">
      <td class="rank">${s.rank}</td>
      <td>${changes.length ? changes.map(([k, v]) => `<span class="chip">${esc(changeText(k, v))}</span>`).join(" ") : '<span class="muted">as planned</span>'}</td>
      <td>${num(`suggestions.${i}.gmv.p50`, s.forecast.gmv.p50, fmtCNY(s.forecast.gmv.p50))}
        <div class="muted small">${fmtCNY(s.forecast.gmv.p10)} – ${fmtCNY(s.forecast.gmv.p90)}</div></td>
      <td>${num(`suggestions.${i}.viewers.p50`, s.forecast.viewers.p50, fmtCount(s.forecast.viewers.p50))}</td>
      <td class="${trendClass(s.gain.delta)}">${num(`suggestions.${i}.gain.ratio`, s.gain.ratio ?? "", fmtSigned(s.gain.ratio))}</td>
      <td><button type="button" class="secondary small use-plan" data-index="${i}">Use</button></td></tr>`;
  }).join("");
  const root = $("#suggest-result");
  root.innerHTML = `<p class="sub">${num("n_candidates", body.n_candidates, fmtCount(body.n_candidates))} variants scored;
      base plan ${obj === "gmv" ? "GMV" : "viewers"} P50 ${num("base." + obj + ".p50", body.base[obj].p50, f(body.base[obj].p50))}.</p>
    <table class="suggest-table"><thead><tr><th>#</th><th>Changes from the plan</th><th>GMV P50 (P10–P90)</th>
      <th>Viewers P50</th><th>vs plan (${obj === "gmv" ? "GMV" : "viewers"})</th><th></th></tr></thead><tbody>${rows}</tbody></table>`;
  root.hidden = false;
  $$(".use-plan", root).forEach((btn) => btn.addEventListener("click", () => {
    loadPlan(body.suggestions[Number(btn.dataset.index)].plan);
    showView("forecast");
    $("#forecast-btn").click();
  }));
}

async function onSuggest() {
  clearErrors();
  const { plan, problems } = planFromForm();
  if (problems.length) {
    showErrors("#suggest-errors", 0, { detail: problems }, "Check the plan");
    return;
  }
  const s = searchSpace();
  const payload = {
    base: plan, space: s, objective: $("#s-objective").value,
    top_k: readNumber($("#s-top-k")) ?? 5, drivers: false,
  };
  const btn = $("#suggest-btn");
  setBusy(btn, true);
  const t0 = performance.now();
  const res = await post("/v1/suggest", payload);
  setBusy(btn, false);
  if (!res.ok) {
    showErrors("#suggest-errors", res.status, res.body, "The service rejected the search");
    bump($("#view-suggest"));
    return;
  }
  $("#suggest-size").textContent = `answered in ${Math.round(performance.now() - t0)} ms`;
  showModel(res.body.model);
  renderSuggest(res.body);
  bump($("#view-suggest"));
}

/** Put a SessionPlan (e.g. a suggestion) into the form. */
function loadPlan(plan) {
  const form = $("#plan-form");
  for (const f of [...TEXT_FIELDS, ...FLOAT_FIELDS, ...INT_FIELDS]) {
    if (form.elements[f]) form.elements[f].value = plan[f] ?? "";
  }
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(?::\d{2}(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.exec(plan.start_time);
  if (m) {
    form.elements.start_date.value = m[1];
    form.elements.start_clock.value = m[2];
    form.elements.start_tz.value = m[3] === "Z" ? "+00:00" : m[3];
  }
  $("#sku-rows").innerHTML = "";
  (plan.products || []).forEach(addSkuRow);
}

// ---------------------------------------------------------------------------- review view

const POSITION_TEXT = { below: "below the P10–P90 range", within: "within the range", above: "above the P10–P90 range" };

function renderReview(body) {
  const kinds = { viewers: fmtCount, orders: fmtCount, gmv: fmtCNY };
  const kindName = { viewers: "count", orders: "count", gmv: "cny" };
  const labels = Object.fromEntries(TARGETS.map(([k, l]) => [k, l]));
  const rows = body.review.map((r) => {
    const f = kinds[r.target];
    const max = Math.max(r.forecast.p90, r.actual) * 1.08;
    const pct = r.abs_pct_error === null ? "n/a" : (r.abs_pct_error * 100).toFixed(1) + "%";
    return `<tr data-target="${r.target}">
      <th>${esc(labels[r.target])}</th>
      <td>${num(`review.${r.target}.p50`, r.forecast.p50, f(r.forecast.p50))}
        <div class="muted small">${f(r.forecast.p10)} – ${f(r.forecast.p90)}</div></td>
      <td>${num(`review.${r.target}.actual`, r.actual, f(r.actual))}</td>
      <td class="${trendClass(r.error)}">${num(`review.${r.target}.error`, r.error, (r.error > 0 ? "+" : r.error < 0 ? "−" : "") + f(Math.abs(r.error)))}
        <div class="muted small">${esc(pct)} of actual</div></td>
      <td><span class="pos ${r.position}" data-field="review.${r.target}.position" data-value="${r.position}">${esc(POSITION_TEXT[r.position])}</span></td>
      <td class="review-bar">${intervalSvg(r.forecast, kindName[r.target], max, r.actual)}</td></tr>`;
  }).join("");
  const leaned = Object.fromEntries(body.leaned_on.map((l) => [l.family, l.multiplier]));
  const root = $("#review-result");
  root.innerHTML = `<table class="review-table"><thead><tr><th></th><th>Forecast P50 (P10–P90)</th>
      <th>Actual</th><th>Actual − P50</th><th>Position</th><th></th></tr></thead><tbody>${rows}</tbody></table>
    <h3>What the GMV forecast leaned on</h3>
    <p class="note">Feature families, largest effect first. A miss with a large family points at
      what to check: a slot the model rated too highly, a product mix that sold differently.</p>
    ${familiesSvg(leaned)}`;
  root.hidden = false;
}

async function onReview() {
  clearErrors();
  const { plan, problems } = planFromForm();
  const actual = {};
  for (const key of ["viewers", "orders", "gmv"]) {
    const v = readNumber($("#a-" + key));
    if (Number.isNaN(v)) problems.push({ loc: ["actual", key], msg: "not a number" });
    else if (v !== undefined) actual[key] = v;
  }
  if (problems.length) {
    showErrors("#review-errors", 0, { detail: problems }, "Check the plan and the actuals");
    return;
  }
  const btn = $("#review-btn");
  setBusy(btn, true);
  const res = await post("/v1/review", { plan, actual });
  setBusy(btn, false);
  if (!res.ok) {
    showErrors("#review-errors", res.status, res.body, "The service rejected the review");
    bump($("#view-review"));
    return;
  }
  showModel(res.body.model);
  renderReview(res.body);
  bump($("#view-review"));
}

// ---------------------------------------------------------------------------- model health

const HEALTH_TARGETS = [["viewers", "Viewers"], ["gmv", "GMV"], ["orders", "Orders"]];

/** Rolling WAPE and P10–P90 coverage of one target over its sessions (x: session order),
 * with the backtest's WAPE (dashed) and the coverage band (shaded). */
function healthSvg(points, band) {
  const W = 330, H = 130, L = 34, R = 8, T = 8, B = 18;
  const n = points.length;
  const wapes = points.map((p) => p.wape).filter((v) => v !== null);
  const top = Math.max(1, ...wapes, band ? band.backtest_wape * 1.6 : 0);
  const x = (i) => L + (W - L - R) * (n > 1 ? i / (n - 1) : 0.5);
  const y = (v) => T + (H - T - B) * (1 - v / top);
  const line = (key) => points.map((p, i) => (p[key] === null ? null : `${x(i).toFixed(1)},${y(p[key]).toFixed(1)}`))
    .filter(Boolean).join(" ");
  let extra = "";
  if (band) {
    extra += `<rect class="cov-band" x="${L}" width="${W - L - R}" y="${y(band.coverage_high)}"
      height="${Math.max(0, y(band.coverage_low) - y(band.coverage_high))}"/>`;
    extra += `<line class="ref" x1="${L}" x2="${W - R}" y1="${y(band.backtest_wape)}" y2="${y(band.backtest_wape)}"/>`;
  }
  const ticks = [0, 0.5, 1].filter((t) => t <= top).map((t) =>
    `<text class="lbl" x="${L - 4}" y="${y(t) + 3}" text-anchor="end">${t.toFixed(1)}</text>
     <line class="grid" x1="${L}" x2="${W - R}" y1="${y(t)}" y2="${y(t)}"/>`).join("");
  return `<svg class="health-chart" viewBox="0 0 ${W} ${H}" role="img"
      aria-label="Rolling WAPE and coverage">${ticks}${extra}
    <polyline class="wape-line" points="${line("wape")}"/>
    <polyline class="cov-line" points="${line("coverage")}"/>
    <text class="lbl" x="${L}" y="${H - 4}">session 1</text>
    <text class="lbl" x="${W - R}" y="${H - 4}" text-anchor="end">${n}</text></svg>`;
}

/** PSI of each plan input, with the 0.1 (moving) and 0.25 (drifted) marks. */
function driftSvg(rows) {
  const known = rows.filter((r) => r.psi !== null);
  const W = 640, rowH = 20, L = 190, R = 50, H = rowH * Math.max(known.length, 1) + 6;
  const top = Math.max(0.5, ...known.map((r) => r.psi));
  const x = (v) => L + (W - L - R) * Math.min(v, top) / top;
  const bars = known.map((r, i) => `<g data-feature="${esc(r.feature)}" data-status="${esc(r.status)}">
      <text class="lbl" x="${L - 6}" y="${i * rowH + 13}" text-anchor="end">${esc(humanFeature(r.feature))}</text>
      <rect class="psi ${esc(r.status)}" x="${L}" y="${i * rowH + 4}" height="${rowH - 6}" width="${Math.max(1, x(r.psi) - L)}"/>
      <text class="lbl" x="${x(r.psi) + 4}" y="${i * rowH + 13}">${r.psi.toFixed(2)}</text></g>`).join("");
  const marks = [0.1, 0.25].map((m) => `<line class="ref" x1="${x(m)}" x2="${x(m)}" y1="0" y2="${H}"/>`).join("");
  return `<svg class="drift-chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="Input drift">${marks}${bars}</svg>`;
}

function fmtRatio(v) { return v === null || v === undefined ? "–" : v.toFixed(3); }
function fmtShare(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(0) + "%"; }

function renderHealth(body) {
  const root = $("#health-result");
  const due = body.retrain_due;
  const head = `<div class="result-head"><div><h3>${body.sessions_with_actuals} sessions with actuals</h3>
      <div class="sub">${esc(modelVersion(body.model))}</div></div>
    <span class="badge ${due ? "cold" : "warm"}" data-testid="retrain-due" data-value="${due}">
      ${due ? "Retraining is due" : body.bands.length ? "Healthy" : "No alarm yet"}</span></div>`
    + (body.reasons.length ? `<ul class="reasons">${body.reasons.map((r) => `<li>${esc(r)}</li>`).join("")}</ul>` : "");
  const bands = Object.fromEntries(body.bands.map((b) => [b.target, b]));
  const charts = HEALTH_TARGETS.map(([t, label]) => {
    const pts = body.series.filter((p) => p.target === t);
    if (!pts.length) return "";
    const b = bands[t];
    const status = b ? (b.outside.length ? `<span class="down">outside the backtest's band</span>` : "within the backtest's band") : "";
    return `<div class="health-card" data-target="${t}"><div class="kpi-label">${label}: rolling WAPE
      <span class="wape-key">━</span> and coverage <span class="cov-key">━</span></div>
      ${healthSvg(pts, b)}<div class="muted small">${status}</div></div>`;
  }).join("");
  const leadRows = body.lead.map((r) => `<tr data-target="${r.target}" data-lead="${esc(r.lead)}">
      <td>${esc(r.target)}</td><td>${esc(r.lead)}</td><td>${r.n}</td><td>${fmtRatio(r.wape)}</td>
      <td>${r.bias === null ? "–" : (r.bias > 0 ? "+" : "") + r.bias.toFixed(3)}</td><td>${fmtShare(r.coverage)}</td></tr>`).join("");
  const alarmRooms = new Set(body.alarms.map((a) => a.room_id));
  const roomRows = body.rooms.filter((r) => r.target === "gmv" || r.target === "viewers").map((r) =>
    `<tr data-room="${esc(r.room_id)}" class="${alarmRooms.has(r.room_id) ? "alarm" : ""}">
      <td>${esc(r.room_id)}</td><td>${esc(r.target)}</td><td>${r.n}</td><td>${fmtRatio(r.wape)}</td>
      <td>${r.bias === null ? "–" : (r.bias > 0 ? "+" : "") + r.bias.toFixed(3)}</td><td>${fmtShare(r.coverage)}</td></tr>`).join("");
  const driftRows = body.drift.map((r) => `<tr data-feature="${esc(r.feature)}">
      <td>${esc(humanFeature(r.feature))}</td><td>${r.psi === null ? "–" : r.psi.toFixed(3)}</td>
      <td><span class="pos ${r.status === "drifted" ? "above" : r.status === "moving" ? "below" : "within"}">${esc(r.status)}</span></td>
      <td>${r.top_shift ? `${esc(r.top_shift)}: ${fmtShare(r.train_share)} → ${fmtShare(r.recent_share)}` : ""}</td></tr>`).join("");
  const drift = body.drift.length
    ? `<h3>Plan inputs against the training data</h3>
      <p class="note">Population stability index of the latest plans: below 0.1 stable, 0.1–0.25
        moving, above 0.25 drifted (plans where the model saw few sessions).</p>
      ${driftSvg(body.drift)}
      <table class="review-table" id="drift-table"><thead><tr><th>Input</th><th>PSI</th><th>Status</th>
        <th>Largest shift (training → now)</th></tr></thead><tbody>${driftRows}</tbody></table>`
    : `<p class="note">${body.drift_reference ? "No plan inputs logged yet." : "This model's bundle has no training summary: retrain to watch input drift."}</p>`;
  const accuracy = body.sessions_with_actuals
    ? `<div class="health-grid">${charts}</div>
      <h3>By lead time</h3>
      <table class="review-table" id="lead-table"><thead><tr><th>Target</th><th>Lead days</th><th>n</th>
        <th>WAPE</th><th>Bias</th><th>P10–P90 coverage</th></tr></thead><tbody>${leadRows}</tbody></table>
      <h3>By room (last ${body.window} sessions)</h3>
      <table class="review-table" id="room-table"><thead><tr><th>Room</th><th>Target</th><th>n</th>
        <th>WAPE</th><th>Bias</th><th>P10–P90 coverage</th></tr></thead><tbody>${roomRows}</tbody></table>`
    : `<p class="empty">No served forecast has an actual yet: forecast plans with a session id, then
        review them or ingest the finished sessions.</p>`;
  root.innerHTML = head + accuracy + drift;
  root.hidden = false;
}

async function onHealth() {
  clearErrors();
  const btn = $("#health-btn");
  setBusy(btn, true);
  const res = await post("/v1/model-health", {});
  setBusy(btn, false);
  if (!res.ok) {
    showErrors("#health-errors", res.status, res.body, "The service could not report its health");
    bump($("#view-health"));
    return;
  }
  showModel(res.body.model);
  renderHealth(res.body);
  bump($("#view-health"));
}

// ---------------------------------------------------------------------------- wiring

function showView(name) {
  for (const tab of $$(".tab")) {
    tab.classList.toggle("active", tab.dataset.view === name);
    tab.setAttribute("aria-selected", String(tab.dataset.view === name));
  }
  for (const v of ["forecast", "compare", "suggest", "review", "health"]) $("#view-" + v).hidden = v !== name;
  if (name === "health") onHealth();
  if (name === "compare") {
    if (!$$("#variant-rows tr").length) presetVariants();
    refreshVariantPlaceholders();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  fillCategorySelect($("#room_category"), true);
  resetPlan();
  $("#plan-form").addEventListener("submit", onForecast);
  $("#plan-form").addEventListener("input", markStale);
  $("#plan-form").addEventListener("change", markStale);
  $("#reset-plan").addEventListener("click", resetPlan);
  $("#add-sku").addEventListener("click", () => addSkuRow());
  $("#add-variant").addEventListener("click", () => addVariantRow());
  $("#preset-variants").addEventListener("click", presetVariants);
  $("#compare-btn").addEventListener("click", onCompare);
  $("#suggest-btn").addEventListener("click", onSuggest);
  $("#review-btn").addEventListener("click", onReview);
  $("#health-btn").addEventListener("click", onHealth);
  for (const tab of $$(".tab")) tab.addEventListener("click", () => showView(tab.dataset.view));
  showView("forecast");
  document.body.dataset.ready = "true";
});
