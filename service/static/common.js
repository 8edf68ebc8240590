/* vitcube pages' shared helpers: DOM building, number formats, the same-origin JSON fetch.
 *
 * Loaded before each page's own script (dashboard.js, compare.js), which takes what it needs
 * from `window.vitcube`. Strings from the API are inserted with textContent, never as HTML.
 */
"use strict";

window.vitcube = (function () {
  function $(id) {
    return document.getElementById(id);
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key === "style") node.setAttribute("style", value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children || []) {
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  /** replaceChildren without the nulls (which the DOM would print as "null"). */
  function fill(node, ...children) {
    node.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
  }

  function fmtMacs(macs) {
    if (macs === null || macs === undefined || Number.isNaN(macs)) return "–";
    const v = Number(macs);
    // Per image up to G; a search's training compute reaches T, P, E.
    for (const [unit, scale] of [["E", 1e18], ["P", 1e15], ["T", 1e12], ["G", 1e9], ["M", 1e6], ["k", 1e3]]) {
      if (Math.abs(v) >= scale) return (v / scale).toPrecision(3) + " " + unit;
    }
    return String(Math.round(v));
  }

  /** Epochs and other tallies with thousands separators: 1000 -> "1,000", 12.5 -> "12.5". */
  function fmtTally(n) {
    if (n === null || n === undefined || Number.isNaN(Number(n))) return "–";
    return Number(n).toLocaleString("en-US", { maximumFractionDigits: 1 });
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) return "–";
    const v = Number(n);
    for (const [unit, scale] of [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]]) {
      if (Math.abs(v) >= scale) return (v / scale).toPrecision(3) + " " + unit;
    }
    return `${v} B`;
  }

  function fmtCount(n) {
    if (n === null || n === undefined) return "–";
    const v = Number(n);
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(2) + " M";
    if (Math.abs(v) >= 1e3) return (v / 1e3).toFixed(1) + " k";
    return String(v);
  }

  function fmtPct(fraction, digits) {
    if (fraction === null || fraction === undefined) return "–";
    return (100 * Number(fraction)).toFixed(digits === undefined ? 1 : digits) + " %";
  }

  function fmtNum(x, digits) {
    if (x === null || x === undefined || Number.isNaN(Number(x))) return "–";
    return Number(x).toFixed(digits === undefined ? 2 : digits);
  }

  /** A search's metric ({name, goal}; val_top1/maximize when absent) as every page shows it:
   * its label, how a value is drawn (`plot`: top-1 in %) and printed, and its order (`score`
   * is higher-is-better whatever the goal; `best` sorts trials best first). One helper, so no
   * view special-cases a metric. */
  function metricOf(search) {
    const spec = (search && search.metric) || {};
    const name = spec.name || "val_top1";
    const minimize = spec.goal === "minimize";
    const top1 = name === "val_top1";
    const known = (v) => v !== null && v !== undefined;
    const score = (v) => (known(v) ? (minimize ? -Number(v) : Number(v)) : null);
    return Object.freeze({
      name,
      minimize,
      label: top1 ? "top-1" : name,
      axis: top1 ? "top-1 accuracy (%)" : name,
      curveAxis: top1 ? "validation top-1 (%)" : name, // the learning curves' y axis
      unit: top1 ? " %" : "",
      hover: top1 ? ".2f" : ".4g", // a d3 format for plotted values
      better: top1 ? "more accurate" : minimize ? `lower ${name}` : `higher ${name}`,
      plot: (v) => (known(v) ? (top1 ? 100 * Number(v) : Number(v)) : null),
      fmt: (v, digits) => (top1 ? fmtPct(v, digits) : fmtNum(v, 4)),
      score,
      /** Trials (or anything with `value`) best first; those without a value last. */
      best: (a, b) => (score(b.value) ?? -Infinity) - (score(a.value) ?? -Infinity),
      /** How much better value `a` is than `b`: {good, text} ("+1.2 pts" for top-1). */
      delta: (a, b) => {
        const d = score(a) - score(b);
        const shown = top1 ? `${(100 * d).toFixed(1)} pts` : fmtNum(Math.abs(Number(a) - Number(b)), 4);
        return { good: d >= 0, text: `${d >= 0 ? (top1 ? "+" : "better by ") : (top1 ? "" : "worse by ")}${shown}` };
      },
      /** A y axis of this metric: reversed when lower is better, so up is always better. */
      yaxis: minimize ? { autorange: "reversed" } : {},
    });
  }

  function errorText(reply) {
    const body = reply.body;
    if (body && body.detail !== undefined) {
      if (Array.isArray(body.detail)) {
        return body.detail.map((d) => (d && d.msg ? d.msg : JSON.stringify(d))).join("; ");
      }
      return String(body.detail);
    }
    if (body && body.reason) return String(body.reason);
    return "the server answered HTTP " + reply.status;
  }

  async function getJSON(path, options) {
    let response;
    try {
      response = await fetch(path, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        ...(options || {}),
      });
    } catch (err) {
      return { ok: false, status: 0, body: { detail: "the server could not be reached" } };
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    return { ok: response.ok, status: response.status, body };
  }

  function markReady() {
    document.body.dataset.ready = String(Number(document.body.dataset.ready || 0) + 1);
  }

  return Object.freeze({ $, el, fill, fmtMacs, fmtTally, fmtBytes, fmtCount, fmtPct, fmtNum, metricOf, errorText, getJSON, markReady });
})();
