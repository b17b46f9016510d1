// Prometheus text exposition, parsed in the browser: the console reads the
// same series from /metrics that the Grafana dashboard queries.
"use strict";

window.EdgesyncMetrics = (() => {
  const sampleRe = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const labelRe = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

  function unescape(v) {
    return v.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
  }

  function number(s) {
    if (s === "+Inf") return Infinity;
    if (s === "-Inf") return -Infinity;
    return Number(s);
  }

  // parse returns the samples of a /metrics answer: {name, labels, value}.
  function parse(text) {
    const out = [];
    for (const line of text.split("\n")) {
      if (line === "" || line[0] === "#") continue;
      const m = sampleRe.exec(line);
      if (!m) continue;
      const labels = {};
      for (const l of (m[2] || "").matchAll(labelRe)) labels[l[1]] = unescape(l[2]);
      out.push({ name: m[1], labels, value: number(m[3]) });
    }
    return out;
  }

  // Samples wraps a parse result with the two questions the console asks.
  class Samples {
    constructor(list, at) {
      this.list = list;
      this.at = at;
    }
    // select: the samples of one series whose labels match `match`.
    select(name, match = {}) {
      return this.list.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v));
    }
    // sum of the matching samples (null when the series is absent).
    sum(name, match) {
      const sel = this.select(name, match);
      return sel.length ? sel.reduce((a, s) => a + s.value, 0) : null;
    }
    // sumBy: label value → sum of the matching samples.
    sumBy(name, label, match) {
      const out = new Map();
      for (const s of this.select(name, match)) {
        const k = s.labels[label] || "";
        out.set(k, (out.get(k) || 0) + s.value);
      }
      return out;
    }
  }

  return { parse, Samples };
})();
