/* The dashboard (GET /dashboard): a read-only view of the JSON API, one view per URL fragment.
 *
 * Views: #/cohorts, #/cohorts/<id>, #/compare/<a>/<b>, #/patients/<id>, #/ops. The API key is typed in
 * once and kept in sessionStorage (gone with the tab); "?key=<key>" inside the fragment is taken too,
 * stored, and removed from the address bar. The fragment never reaches the server, so patient ids in it
 * never reach a log; the API calls below are the documented JSON routes.
 *
 * Every figure comes from the API, clinical thresholds included (GET /v1/reference/response-levels,
 * derived from shared/clinical): nothing clinical is hard-coded here. Text is set with textContent
 * (never innerHTML), so no value from the API is ever parsed as markup.
 */
(function () {
  "use strict";

  var KEY_STORAGE = "cml.dashboard.apiKey";
  var OPS_REFRESH_MS = 5000;
  var main = document.getElementById("main");
  var message = document.getElementById("message");
  var charts = [];
  var timer = null;
  var reference = null;
  var renderToken = 0;

  // ---- small helpers ------------------------------------------------------------------------------

  function h(tag, attrs) {
    var el = document.createElement(tag);
    var a = attrs || {};
    Object.keys(a).forEach(function (k) {
      if (a[k] === null || a[k] === undefined || a[k] === false) return;
      if (k === "text") el.textContent = a[k];
      else if (k === "className") el.className = a[k];
      else el.setAttribute(k, a[k] === true ? "" : a[k]);
    });
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }

  function append(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) child.forEach(function (c) { append(el, c); });
    else el.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }

  function pct(value, digits) {
    if (value === null || value === undefined) return "not reached";
    return (value * 100).toFixed(digits === undefined ? 1 : digits) + "%";
  }

  function withCi(est, lo, hi) {
    if (est === null || est === undefined) return "not reached";
    var ci = lo === null || lo === undefined || hi === null || hi === undefined
      ? "" : " (" + pct(lo) + " to " + pct(hi) + ")";
    return pct(est) + ci;
  }

  function isText(value) {
    // An IS% as the lab would write it: significant digits, no exponent.
    if (value === null || value === undefined) return "n/a";
    var s = Number(value).toPrecision(3);
    if (s.indexOf("e") >= 0) s = Number(s).toFixed(8).replace(/0+$/, "");
    return s.replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "") + "%";
  }

  function pValue(test) {
    if (!test || test.p_value === null || test.p_value === undefined) return "undefined (too few events)";
    return test.p_value < 0.0001 ? "< 0.0001" : test.p_value.toFixed(4);
  }

  function yesNo(value) {
    return value === true ? "yes" : value === false ? "no" : "not assessed";
  }

  function table(caption, headers, rows, attrs) {
    return h("table", attrs || {},
      h("caption", { text: caption }),
      h("thead", {}, h("tr", {}, headers.map(function (x) { return h("th", { scope: "col", text: x }); }))),
      h("tbody", {}, rows));
  }

  function showMessage(text) {
    message.textContent = text;
    message.hidden = !text;
  }

  function enc(part) { return encodeURIComponent(part); }

  // ---- the key ------------------------------------------------------------------------------------

  function getKey() { return sessionStorage.getItem(KEY_STORAGE) || ""; }

  function setKey(key) {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  }

  // ---- the API ------------------------------------------------------------------------------------

  function ApiError(status, text) {
    this.status = status;
    this.message = text;
  }

  function api(path) {
    var key = getKey();
    if (!key) return Promise.reject(new ApiError(0, "Enter an API key above (one with the status:read scope)."));
    // Relative to the page, so the dashboard works behind a path prefix as /docs does.
    return fetch(path, { headers: { Authorization: "Bearer " + key, Accept: "application/json" }, cache: "no-store" })
      .then(function (resp) {
        return resp.json().catch(function () { return {}; }).then(function (body) {
          if (resp.ok) return body;
          var detail = body && body.detail ? " " + body.detail : "";
          if (resp.status === 401) {
            throw new ApiError(401, "The API key was not accepted (401 Unauthorized): check it and enter it again above.");
          }
          if (resp.status === 403) {
            throw new ApiError(403, "This API key may not see this view (403 Forbidden)." + detail);
          }
          if (resp.status === 404) throw new ApiError(404, "Not found." + detail);
          if (resp.status === 429) throw new ApiError(429, "Too many requests (429): wait a moment and reload.");
          throw new ApiError(resp.status, "The API answered " + resp.status + "." + detail);
        });
      }, function () {
        throw new ApiError(0, "The service did not answer: check the network and reload.");
      });
  }

  function loadReference() {
    if (reference) return Promise.resolve(reference);
    return api("v1/reference/response-levels").then(function (doc) { reference = doc; return doc; });
  }

  // ---- routing ------------------------------------------------------------------------------------

  function parseHash() {
    var raw = location.hash.replace(/^#/, "");
    var q = raw.indexOf("?");
    var path = q >= 0 ? raw.slice(0, q) : raw;
    var params = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : "");
    if (params.has("key")) {
      setKey(params.get("key"));
      params.delete("key");
      var rest = params.toString();
      // Out of the address bar (and so out of the history, bookmarks and screen shares) at once.
      history.replaceState(null, "", location.pathname + location.search + "#" + path + (rest ? "?" + rest : ""));
    }
    var parts = path.split("/").filter(Boolean).map(function (p) {
      try { return decodeURIComponent(p); } catch (e) { return p; }
    });
    return parts.length ? parts : ["cohorts"];
  }

  function clearView() {
    if (timer) { clearTimeout(timer); timer = null; }
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    while (main.firstChild) main.removeChild(main.firstChild);
    showMessage("");
  }

  function route() {
    var parts = parseHash();
    var token = ++renderToken;
    clearView();
    document.querySelectorAll("[data-nav]").forEach(function (a) {
      if (a.getAttribute("data-nav") === parts[0]) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    var view;
    if (parts[0] === "cohorts" && parts.length === 1) view = cohortsView();
    else if (parts[0] === "cohorts" && parts.length === 2) view = cohortView(parts[1]);
    else if (parts[0] === "compare" && parts.length === 3) view = compareView(parts[1], parts[2]);
    else if (parts[0] === "patients" && parts.length === 2) view = patientView(parts[1]);
    else if (parts[0] === "ops" && parts.length === 1) view = opsView(token);
    else view = Promise.reject(new ApiError(404, "No such view: try Cohorts, Operations, or a patient id."));
    main.setAttribute("aria-busy", "true");
    main.appendChild(h("p", { className: "loading", text: "Loading..." }));
    view.then(function (node) {
      if (token !== renderToken) return;
      // Not clearView(): the charts this view just made are in `node`.
      while (main.firstChild) main.removeChild(main.firstChild);
      main.appendChild(node);
      var heading = main.querySelector("h2");
      if (heading) document.title = heading.textContent + " - CML dashboard";
    }, function (err) {
      if (token !== renderToken) return;
      clearView();
      var text = err && err.message ? err.message : String(err);
      showMessage(text);
      main.appendChild(h("section", { className: "error-view" },
        h("h2", { text: err && (err.status === 401 || err.status === 0) ? "API key needed" : "Cannot show this view" }),
        h("p", { className: "error", "data-status": err && err.status, text: text })));
      if (err && (err.status === 401 || err.status === 0) && !getKey()) document.getElementById("key-input").focus();
    }).then(function () { main.removeAttribute("aria-busy"); });
  }

  // ---- cohorts ------------------------------------------------------------------------------------

  function horizonIndex(stats, months) {
    return (stats.horizons_months || []).indexOf(months);
  }

  function cohortsView() {
    return api("v1/cohorts").then(function (list) {
      var cohorts = list.cohorts || [];
      return Promise.all(cohorts.map(function (c) {
        return api("v1/cohorts/" + enc(c.cohort_id) + "/statistics");
      })).then(function (stats) {
        var rows = cohorts.map(function (c, i) {
          var s = stats[i];
          var k = horizonIndex(s, 12);
          var aj = s.aalen_johansen || {};
          var est = k >= 0 ? aj.estimate[k] : null;
          return h("tr", { "data-cohort": c.cohort_id },
            h("th", { scope: "row" }, h("a", { href: "#/cohorts/" + enc(c.cohort_id), text: c.cohort_id })),
            h("td", { className: "num", text: s.n !== undefined ? s.n : c.n }),
            h("td", { className: "num", text: s.n_evaluable !== undefined ? s.n_evaluable : "pending" }),
            h("td", { text: (c.definition || {}).endpoint || "" }),
            h("td", { className: "num fig12", "data-value": est === null || est === undefined ? "null" : String(est),
              text: k >= 0 ? withCi(est, aj.lower[k], aj.upper[k]) : "pending" }),
            h("td", { text: s.computed_at || "not yet" }),
            h("td", { text: s.pending ? "yes: refreshing" : "no" }));
        });
        var options = cohorts.map(function (c) { return h("option", { value: c.cohort_id, text: c.cohort_id }); });
        var form = h("form", { id: "compare-form", className: "inline" },
          h("label", { for: "cmp-a", text: "Compare" }), h("select", { id: "cmp-a" }, options),
          h("label", { for: "cmp-b", text: "with" }),
          h("select", { id: "cmp-b" }, options.map(function (o) { return o.cloneNode(true); })),
          h("button", { type: "submit", text: "Compare" }));
        if (cohorts.length > 1) form.querySelector("#cmp-b").selectedIndex = 1;
        form.addEventListener("submit", function (ev) {
          ev.preventDefault();
          location.hash = "#/compare/" + enc(form.querySelector("#cmp-a").value) + "/" + enc(form.querySelector("#cmp-b").value);
        });
        return h("section", {},
          h("h2", { text: "Cohorts" }),
          h("p", { className: "hint", text: "Cumulative incidence of each cohort's endpoint at 12 months (Aalen-Johansen, competing events as defined; 95% CI)." }),
          h("div", { className: "scroll" }, table("Every cohort", ["Cohort", "n", "Evaluable", "Endpoint",
            "12-month cumulative incidence (95% CI)", "Computed at", "Pending"], rows, { id: "cohort-table" })),
          cohorts.length ? form : h("p", { text: "No cohort is defined yet." }));
      });
    });
  }

  var COLOURS = { aj: "#1f5fa8", km: "#b03a2e", a: "#1f5fa8", b: "#b35900" };

  function steps(curve, name) {
    // The step curve from (0, 0) to the last follow-up, as the API documents it.
    var part = curve[name] || {};
    var x = [0].concat(curve.time_months || []);
    var pick = function (k) { return [0].concat(part[k] || []); };
    var est = pick("estimate"), lo = pick("lower"), hi = pick("upper");
    if (curve.last_time_days !== null && curve.last_time_days !== undefined) {
      x.push(curve.last_time_days / reference.days_per_month);  // loaded before any curve is drawn
      est.push(est[est.length - 1]); lo.push(lo[lo.length - 1]); hi.push(hi[hi.length - 1]);
    }
    return { x: x, est: est, lo: lo, hi: hi };
  }

  function merge(curves) {
    // uPlot wants one x array: the union of the curves' step times, each curve carried forward.
    var xs = [];
    curves.forEach(function (c) { c.x.forEach(function (t) { if (xs.indexOf(t) < 0) xs.push(t); }); });
    xs.sort(function (p, q) { return p - q; });
    var out = [xs];
    curves.forEach(function (c) {
      ["est", "lo", "hi"].forEach(function (k) {
        var j = 0, last = null;
        out.push(xs.map(function (t) {
          while (j < c.x.length && c.x[j] <= t) { last = c[k][j]; j++; }
          return t > c.x[c.x.length - 1] ? null : last;
        }));
      });
    });
    return out;
  }

  function chartWidth(el) {
    return Math.max(320, Math.min(900, (el.clientWidth || main.clientWidth || 800) - 8));
  }

  function incidenceChart(container, title, curves, atRisk) {
    // curves: [{label, colour, steps}]; atRisk: [{label, months, counts}] drawn as extra x axes.
    var data = merge(curves.map(function (c) { return c.steps; }));
    var series = [{ label: "Months" }];
    var bands = [];
    curves.forEach(function (c, i) {
      var base = 1 + 3 * i;
      var stepped = uPlot.paths.stepped({ align: 1 });
      series.push({ label: c.label, stroke: c.colour, width: 2, paths: stepped, points: { show: false },
        value: function (u, v) { return v === null ? "-" : pct(v); } });
      series.push({ label: c.label + " lower 95%", stroke: c.colour, width: 0, paths: stepped, points: { show: false }, show: true,
        value: function (u, v) { return v === null ? "-" : pct(v); } });
      series.push({ label: c.label + " upper 95%", stroke: c.colour, width: 0, paths: stepped, points: { show: false },
        value: function (u, v) { return v === null ? "-" : pct(v); } });
      bands.push({ series: [base + 2, base + 1], fill: c.colour + "26" });
    });
    var axes = [
      { label: "Months from enrolment", stroke: "#222", grid: { stroke: "#e3e3e3" },
        splits: atRisk.length ? function () { return atRisk[0].months; } : undefined },
      { label: "Cumulative incidence", stroke: "#222", grid: { stroke: "#e3e3e3" },
        values: function (u, vals) { return vals.map(function (v) { return Math.round(v * 100) + "%"; }); } },
    ];
    atRisk.forEach(function (r) {
      axes.push({ scale: "x", side: 2, label: "Number at risk: " + r.label, stroke: "#222", grid: { show: false },
        ticks: { show: false }, size: 22, labelSize: 18, labelFont: "12px system-ui, sans-serif",
        splits: function () { return r.months; },
        values: function () { return r.counts.map(String); } });
    });
    var el = h("div", { className: "chart", role: "img", "aria-label": title + " (the figures are in the table below)" });
    container.appendChild(el);
    var maxX = data[0].length ? data[0][data[0].length - 1] : 12;
    var u = new uPlot({
      width: chartWidth(container), height: 340 + 40 * atRisk.length, title: title,
      scales: { x: { time: false, range: [0, Math.max(12, maxX)] }, y: { range: [0, 1] } },
      series: series, bands: bands, axes: axes, legend: { show: false },
    }, data, el);
    charts.push(u);
    // A static legend: uPlot's would list the band edges as series of their own.
    container.appendChild(h("ul", { className: "legend" }, curves.map(function (c) {
      var swatch = h("span", { className: "swatch", "aria-hidden": "true" });
      swatch.style.borderColor = c.colour;  // CSSOM, which the page's style-src 'self' allows
      swatch.style.backgroundColor = c.colour + "26";
      return h("li", {}, swatch, c.label + " (line) with its 95% band (shaded)");
    })));
    return u;
  }

  function horizonRows(stats, label) {
    return (stats.horizons_months || []).map(function (m, i) {
      var aj = stats.aalen_johansen, km = stats.one_minus_km;
      return h("tr", {},
        label ? h("th", { scope: "row", text: label }) : null,
        h(label ? "td" : "th", label ? { className: "num", text: m } : { scope: "row", className: "num", text: m }),
        h("td", { className: "num", text: withCi(aj.estimate[i], aj.lower[i], aj.upper[i]) }),
        h("td", { className: "num", text: withCi(km.estimate[i], km.lower[i], km.upper[i]) }),
        h("td", { className: "num", text: aj.n_at_risk[i] }));
    });
  }

  function curvePointRows(curve) {
    var aj = curve.aalen_johansen || {}, km = curve.one_minus_km || {};
    return (curve.time_months || []).map(function (m, i) {
      return h("tr", {},
        h("td", { className: "num", text: m.toFixed(1) }),
        h("td", { className: "num", text: withCi(aj.estimate[i], aj.lower[i], aj.upper[i]) }),
        h("td", { className: "num", text: withCi(km.estimate[i], km.lower[i], km.upper[i]) }),
        h("td", { className: "num", text: aj.n_at_risk[i] }));
    });
  }

  function atRiskOf(curve, label) {
    var t = curve.at_risk;
    return t && t.months && t.months.length ? [{ label: label, months: t.months, counts: t.n_at_risk }] : [];
  }

  function definitionList(defn) {
    var d = defn || {};
    return h("dl", { className: "facts" },
      h("dt", { text: "Endpoint" }), h("dd", { text: (d.endpoint || "") + " or deeper, first reached after enrolment" }),
      h("dt", { text: "Competing events" }), h("dd", { text: (d.competing_events || []).join(", ") || "none" }),
      h("dt", { text: "Censoring events" }), h("dd", { text: (d.censoring_events || []).join(", ") || "none" }),
      h("dt", { text: "Data cut-off" }), h("dd", { text: d.data_cutoff || "none" }),
      d.description ? [h("dt", { text: "Description" }), h("dd", { text: d.description })] : null);
  }

  function cohortView(id) {
    var base = "v1/cohorts/" + enc(id);
    return Promise.all([api(base + "/statistics"), api(base + "/curve"), loadReference()]).then(function (r) {
      var stats = r[0], curve = r[1];
      var section = h("section", {}, h("h2", { text: "Cohort " + id }));
      if (stats.pending && !stats.horizons_months) {
        section.appendChild(h("p", { text: "This cohort's statistics are being computed: reload in a few seconds." }));
        return section;
      }
      section.appendChild(h("p", { className: "hint" },
        stats.n + " patients, " + stats.n_evaluable + " evaluable; " + stats.outcomes.endpoint + " reached " +
        stats.definition.endpoint + ", " + stats.outcomes.competing + " competing events, " + stats.outcomes.censored +
        " censored. Computed at " + stats.computed_at + (stats.pending ? " (a refresh is pending)." : "."), " ",
        h("a", { href: "#/cohorts", text: "All cohorts" })));
      var figure = h("figure", {});
      section.appendChild(figure);
      incidenceChart(figure, "Cumulative incidence of " + stats.definition.endpoint, [
        { label: "Aalen-Johansen", colour: COLOURS.aj, steps: steps(curve, "aalen_johansen") },
        { label: "1 - Kaplan-Meier", colour: COLOURS.km, steps: steps(curve, "one_minus_km") },
      ], atRiskOf(curve, "n"));
      figure.appendChild(h("figcaption", { text: "Aalen-Johansen treats competing events as such; 1 - Kaplan-Meier censors them (and so overstates the incidence when there are any). Shaded: 95% confidence bands." }));
      section.appendChild(h("div", { className: "scroll" }, table("Figures at the horizons (95% CI)",
        ["Months", "Aalen-Johansen", "1 - Kaplan-Meier", "At risk"], horizonRows(stats), { id: "horizon-table" })));
      var m = stats.median_time_to_endpoint || {};
      section.appendChild(h("p", { text: "Median time to " + stats.definition.endpoint + ": " +
        (m.median_months === null || m.median_months === undefined ? "not reached" : m.median_months.toFixed(1) + " months") }));
      section.appendChild(h("h3", { text: "Definition" }));
      section.appendChild(definitionList(stats.definition));
      section.appendChild(h("details", {}, h("summary", { text: "Every point of the curves (text equivalent of the chart)" }),
        h("div", { className: "scroll" }, table("Curve points", ["Months", "Aalen-Johansen", "1 - Kaplan-Meier", "At risk"],
          curvePointRows(curve), { id: "curve-table" })),
        curve.at_risk ? table("Numbers at risk under the axis", ["Months", "At risk"], curve.at_risk.months.map(function (mo, i) {
          return h("tr", {}, h("td", { className: "num", text: mo }), h("td", { className: "num", text: curve.at_risk.n_at_risk[i] }));
        })) : null));
      return section;
    });
  }

  function compareView(a, b) {
    var q = "v1/cohorts/compare?a=" + enc(a) + "&b=" + enc(b);
    return Promise.all([api(q), api("v1/cohorts/" + enc(a) + "/curve"), api("v1/cohorts/" + enc(b) + "/curve"), loadReference()])
      .then(function (r) {
        var cmp = r[0], ca = r[1], cb = r[2];
        var section = h("section", {}, h("h2", { text: "Compare " + a + " with " + b }),
          h("p", { className: "hint" }, h("a", { href: "#/cohorts", text: "All cohorts" })));
        section.appendChild(h("dl", { className: "facts tests" },
          h("dt", { text: "Log-rank test (endpoint, competing events censored)" }),
          h("dd", { id: "logrank-p", text: "p = " + pValue(cmp.logrank) }),
          h("dt", { text: "Gray's test (cumulative incidence, competing events)" }),
          h("dd", { id: "gray-p", text: "p = " + pValue(cmp.gray) })));
        (cmp.warnings || []).forEach(function (w) { section.appendChild(h("p", { className: "warning", text: "Caution: " + w })); });
        var figure = h("figure", {});
        section.appendChild(figure);
        incidenceChart(figure, "Cumulative incidence (Aalen-Johansen)", [
          { label: a, colour: COLOURS.a, steps: steps(ca, "aalen_johansen") },
          { label: b, colour: COLOURS.b, steps: steps(cb, "aalen_johansen") },
        ], atRiskOf(ca, a).concat(atRiskOf(cb, b)));
        section.appendChild(h("div", { className: "scroll" }, table("Figures at the horizons (95% CI)",
          ["Cohort", "Months", "Aalen-Johansen", "1 - Kaplan-Meier", "At risk"],
          horizonRows(cmp.a, a).concat(horizonRows(cmp.b, b)), { id: "compare-table" })));
        return section;
      });
  }

  // ---- a patient ----------------------------------------------------------------------------------

  // Dark enough for 4.5:1 against their own light tint (WCAG AA for the labels drawn on the bands).
  var VERDICT = { optimal: "#1b5e20", warning: "#7a4100", failure: "#b71c1c" };
  var LINE_COLOURS = ["#6a1b9a", "#00695c", "#1565c0", "#ad1457", "#4e342e", "#37474f"];

  function decades(lo, hi) {
    var out = [];
    for (var e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) out.push(Math.pow(10, e));
    return out.filter(function (v) { return v >= lo * 0.999 && v <= hi * 1.001; });
  }

  function seconds(date) { return Date.parse(String(date).slice(0, 10) + "T00:00:00Z") / 1000; }

  function patientMarks(status) {
    // Therapy starts, changes and stops, and recorded events: vertical lines on the timeline.
    var marks = [];
    var therapy = status.therapy || {};
    (therapy.lines || []).forEach(function (l) {
      marks.push({ date: l.started_on, text: "Line " + l.line + ": " + l.tki + " started" });
      if (l.ended_on) marks.push({ date: l.ended_on, text: l.tki + " ended" + (l.reason ? " (" + l.reason + ")" : "") });
    });
    (status.events || []).forEach(function (e) {
      if (e.type === "tki_changed") return;  // already a therapy line
      marks.push({ date: e.date, text: String(e.type).replace(/_/g, " ") + (e.reason ? " (" + e.reason + ")" : "") });
    });
    return marks.filter(function (m) { return m.date; });
  }

  function patientChart(container, results, status, ref) {
    var kept = results.slice().sort(function (p, q) { return seconds(p.collected_at) - seconds(q.collected_at); });
    var thresholds = ref.thresholds;
    var floor = Math.min.apply(null, thresholds.map(function (t) { return t.is_percent_at_most; })) / 10;
    var xs = [], line = [], detected = [], undetected = [], withdrawn = [];
    kept.forEach(function (r) {
      var c = r.classification || {};
      var y = c.upper_is_percent || c.is_percent || c.sensitivity_percent || floor;
      xs.push(seconds(r.collected_at));
      line.push(r.withdrawn ? null : y);
      detected.push(!r.withdrawn && c.detectable ? y : null);
      undetected.push(!r.withdrawn && !c.detectable ? y : null);
      withdrawn.push(r.withdrawn ? y : null);
    });
    var marks = patientMarks(status);
    var windows = (status.milestones || []).filter(function (m) { return m.window_from && m.window_to; });
    var start = (status.therapy && status.therapy.lines && status.therapy.lines[0] || {}).started_on;
    var xmin = Math.min.apply(null, xs.concat(marks.map(function (m) { return seconds(m.date); }), windows.map(function (w) { return seconds(w.window_from); })));
    var xmax = Math.max.apply(null, xs.concat(marks.map(function (m) { return seconds(m.date); }), windows.map(function (w) { return seconds(w.window_to); })));
    var pad = Math.max(86400 * 20, (xmax - xmin) * 0.03);
    var ymax = Math.max(100, Math.max.apply(null, line.concat(withdrawn).filter(function (v) { return v !== null; }).concat([1])) * 2);

    function drawOverlay(u) {
      var ctx = u.ctx, top = u.bbox.top, height = u.bbox.height, left = u.bbox.left, width = u.bbox.width;
      var dpr = uPlot.pxRatio;
      ctx.save();
      ctx.font = (11 * dpr) + "px system-ui, sans-serif";
      // ELN 2020 milestone windows, shaded by their verdict.
      windows.forEach(function (w, i) {
        var x0 = u.valToPos(seconds(w.window_from), "x", true), x1 = u.valToPos(seconds(w.window_to), "x", true);
        var colour = VERDICT[w.assessment] || "#595959";
        ctx.fillStyle = colour + "22";
        ctx.fillRect(x0, top, x1 - x0, height);
        ctx.fillStyle = colour;
        ctx.textAlign = "center";
        // Staggered: the three windows are close together once the axis spans years.
        ctx.fillText(w.milestone + ": " + String(w.assessment).replace(/_/g, " "), (x0 + x1) / 2, top + (12 + 13 * i) * dpr);
      });
      // IS% thresholds from the service's clinical tables.
      thresholds.forEach(function (t) {
        var y = u.valToPos(t.is_percent_at_most, "y", true);
        ctx.strokeStyle = "#555";
        ctx.lineWidth = dpr;
        ctx.setLineDash([4 * dpr, 4 * dpr]);
        ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + width, y); ctx.stroke();
        ctx.setLineDash([]);
        ctx.fillStyle = "#333";
        ctx.textAlign = "right";
        ctx.fillText(t.label === t.text ? t.text : t.label + " (" + t.text + ")", left + width - 4 * dpr, y - 3 * dpr);
      });
      // Therapy and clinical events.
      marks.forEach(function (m, i) {
        var x = u.valToPos(seconds(m.date), "x", true);
        ctx.strokeStyle = LINE_COLOURS[i % LINE_COLOURS.length];
        ctx.lineWidth = 2 * dpr;
        ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
        ctx.fillStyle = ctx.strokeStyle;
        ctx.textAlign = "left";
        ctx.fillText(m.text, x + 4 * dpr, top + height - (8 + 14 * (i % 3)) * dpr);
      });
      ctx.restore();
    }

    // The markers drawn (detected, undetectable, withdrawn): one per result, which the tests count.
    var drawn = [detected, undetected, withdrawn].reduce(function (n, ys) {
      return n + ys.filter(function (v) { return v !== null; }).length;
    }, 0);
    var el = h("div", { className: "chart", role: "img", "data-points": String(drawn),
      "aria-label": "BCR-ABL1 IS% over time on a log axis (the results are in the table below)" });
    container.appendChild(el);
    var val = function (u, v) { return v === null ? "-" : isText(v); };
    var u = new uPlot({
      width: chartWidth(container), height: 380, title: "BCR-ABL1 (IS%)",
      scales: { x: { time: true, range: [xmin - pad, xmax + pad] },
        y: { distr: 3, log: 10, range: [floor, ymax] } },
      series: [
        { label: "Date", value: function (u, v) { return v === null ? "-" : new Date(v * 1000).toISOString().slice(0, 10); } },
        { label: "Trend", stroke: "#1f5fa8", width: 1.5, spanGaps: true, points: { show: false }, value: val },
        { label: "Detected", stroke: "#1f5fa8", width: 0, paths: function () { return null; }, value: val,
          points: { show: true, size: 10, fill: "#1f5fa8", stroke: "#1f5fa8" } },
        { label: "Undetectable (at its sensitivity)", stroke: "#1f5fa8", width: 0, paths: function () { return null; }, value: val,
          points: { show: true, size: 11, width: 2, fill: "#ffffff", stroke: "#1f5fa8" } },
        { label: "Withdrawn", stroke: "#757575", width: 0, paths: function () { return null; }, value: val,
          points: { show: true, size: 9, width: 2, fill: "#ffffff", stroke: "#757575" } },
      ],
      axes: [
        { stroke: "#222", grid: { stroke: "#e3e3e3" } },
        { label: "BCR-ABL1 IS%", stroke: "#222", size: 70, grid: { stroke: "#e3e3e3" },
          // One tick per decade: the minor log ticks would bury the threshold lines.
          splits: function () { return decades(floor, ymax); },
          values: function (u, vals) { return vals.map(function (v) { return isText(v); }); } },
      ],
      hooks: { draw: [drawOverlay] },
    }, [xs, line, detected, undetected, withdrawn], el);
    charts.push(u);
    if (start) container.appendChild(h("p", { className: "hint", text: "Milestone windows count from the TKI start, " + start + " (ELN 2020: 3, 6 and 12 months, each +-1 month)." }));
    return u;
  }

  function statusPanel(status) {
    var loss = status.loss_of_mmr || {};
    var actim = status.actim_eligible || {};
    var tfr = status.tfr_eligibility || {};
    var lossText = loss.current ? "yes, now" + (loss.confirmed ? " (confirmed " + loss.confirmed_on + ")" : " (not confirmed)")
      : loss.ever_lost ? "lost on " + loss.first_lost_on + ", regained " + (loss.regained_on || "") : "no";
    var dl = h("dl", { className: "facts", id: "status-facts" },
      h("dt", { text: "Current level" }), h("dd", { id: "current-level", text: (status.response_level || "no result") +
        (status.is_percent !== null && status.is_percent !== undefined ? " (IS " + isText(status.is_percent) + ", " + status.response_level_on + ")" : "") }),
      h("dt", { text: "Best level" }), h("dd", { text: (status.best_level || "none") + (status.best_level_on ? " (" + status.best_level_on + ")" : "") }),
      h("dt", { text: "Loss of MMR" }), h("dd", { text: lossText }),
      h("dt", { text: "ELN 2020 assessment" }), h("dd", { className: "verdict-" + status.eln_assessment, text: (status.eln_assessment || "none").replace(/_/g, " ") }),
      h("dt", { text: "ACTIM entry" }), h("dd", { text: actim.eligible === true ? "eligible" : actim.eligible === false ? "not eligible" : "not assessed" }),
      h("dt", { text: "TFR (ELN 2020)" }), h("dd", { text: "minimal: " + yesNo((tfr.minimal || {}).eligible) + "; optimal: " + yesNo((tfr.optimal || {}).eligible) }),
      h("dt", { text: "Therapy" }), h("dd", { text: status.therapy ? (status.therapy.current_tki || "off TKI") + (status.therapy.dose_mg ? " " + status.therapy.dose_mg + " mg" : "") + ", line " + status.therapy.line : "unknown" }),
      h("dt", { text: "Next sample due" }), h("dd", { text: status.next_sample_due || "n/a" }));
    var actions = status.actions || [];
    return h("aside", { className: "panel", "aria-label": "Status" },
      h("h3", { text: "Status" }), dl,
      h("h3", { text: "Actions" }),
      actions.length ? h("ul", { id: "actions" }, actions.map(function (a) {
        return h("li", {}, h("strong", { text: a.code.replace(/_/g, " ") }), " (since " + a.since + (a.due_by ? ", due by " + a.due_by : "") + "): " + a.reason);
      })) : h("p", { id: "actions", text: "No open action." }),
      h("h3", { text: "Criteria" }),
      h("details", {}, h("summary", { text: "ACTIM and TFR criteria" }),
        h("ul", {}, Object.keys(actim.criteria || {}).map(function (k) {
          return h("li", { text: "ACTIM " + k.replace(/_/g, " ") + ": " + yesNo(actim.criteria[k].met) + ". " + actim.criteria[k].detail });
        }).concat(["minimal", "optimal"].reduce(function (acc, kind) {
          var c = (tfr[kind] || {}).criteria || {};
          return acc.concat(Object.keys(c).map(function (k) {
            return h("li", { text: "TFR " + kind + " " + k.replace(/_/g, " ") + ": " + yesNo(c[k].met) + ". " + c[k].detail });
          }));
        }, [])))));
  }

  function patientView(id) {
    var base = "v1/patients/" + enc(id);
    return Promise.all([api(base + "/status"), api(base + "/results"), loadReference()]).then(function (r) {
      var status = r[0], timeline = r[1], ref = r[2];
      var results = timeline.results || [];
      var section = h("section", {}, h("h2", { text: "Patient " + id }));
      if (status.pending && !status.milestones) {
        section.appendChild(h("p", { text: "This patient's status is being computed: reload in a few seconds." }));
        return section;
      }
      var layout = h("div", { className: "patient" });
      var figure = h("figure", { className: "timeline" });
      layout.appendChild(figure);
      layout.appendChild(statusPanel(status));
      section.appendChild(layout);
      if (results.length) patientChart(figure, results, status, ref);
      else figure.appendChild(h("p", { text: "No result yet." }));
      figure.appendChild(h("figcaption", { text: "Filled: detected; open: undetectable, drawn at the sensitivity the sample reached; grey at the foot of the axis: withdrawn (entered in error, never scored); shaded: ELN 2020 milestone windows with their verdicts; vertical lines: therapy and clinical events." }));
      section.appendChild(h("h3", { text: "ELN 2020 milestones" }));
      section.appendChild(h("div", { className: "scroll" }, table("Milestones from TKI start", ["Milestone", "Window", "Verdict", "Result", "Why"],
        (status.milestones || []).map(function (m) {
          return h("tr", {}, h("th", { scope: "row", text: m.milestone }),
            h("td", { text: m.window_from + " to " + (m.window_to || "now") }),
            h("td", { className: "verdict-" + m.assessment, text: String(m.assessment).replace(/_/g, " ") }),
            h("td", { text: m.result_id ? m.result_id + " (" + isText(m.is_percent) + ")" : "none" }),
            h("td", { text: m.reason || "" }));
        }), { id: "milestone-table" })));
      section.appendChild(h("h3", { text: "Results (text equivalent of the chart)" }));
      section.appendChild(h("div", { className: "scroll" }, table("Every result, oldest first", ["Collected", "Result", "IS%", "Level", "Detected", "Sensitivity", "Status"],
        results.slice().sort(function (p, q) { return seconds(p.collected_at) - seconds(q.collected_at); }).map(function (x) {
          var c = x.classification;
          if (!c) {  // withdrawn (entered in error): never scored, drawn at the foot of the axis
            return h("tr", { className: "withdrawn" },
              h("td", { text: String(x.collected_at).slice(0, 10) }), h("td", { text: x.result_id }),
              h("td", { className: "num", text: "not scored" }), h("td", {}), h("td", {}), h("td", {}),
              h("td", { text: x.withdrawn ? "withdrawn" : x.status }));
          }
          return h("tr", { className: x.withdrawn ? "withdrawn" : null },
            h("td", { text: String(x.collected_at).slice(0, 10) }), h("td", { text: x.result_id }),
            h("td", { className: "num", text: c.detectable ? isText(c.is_percent) : "< " + isText(c.upper_is_percent) }),
            h("td", { text: c.level || "" }), h("td", { text: c.detectable ? "yes" : "no" }),
            h("td", { className: "num", text: isText(c.sensitivity_percent) }),
            h("td", { text: x.withdrawn ? "withdrawn" : x.status }));
        }), { id: "result-table" })));
      var marks = patientMarks(status);
      if (marks.length) {
        section.appendChild(h("div", { className: "scroll" }, table("Therapy and events", ["Date", "What"], marks.map(function (m) {
          return h("tr", {}, h("td", { text: m.date }), h("td", { text: m.text }));
        }), { id: "event-table" })));
      }
      return section;
    });
  }

  // ---- ops ----------------------------------------------------------------------------------------

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "none waiting";
    return seconds < 120 ? seconds.toFixed(1) + " s" : (seconds / 60).toFixed(1) + " min";
  }

  function opsView(token) {
    return Promise.all([api("v1/ops/queues"), api("v1/ops/dead-letters")]).then(function (r) {
      var q = r[0], dead = r[1].dead_letters || [];
      var lag = q.recompute_lag_ms || {};
      var section = h("section", { id: "ops" }, h("h2", { text: "Operations" }),
        h("p", { className: "hint", text: "Refreshed every " + OPS_REFRESH_MS / 1000 + " seconds; last at " + new Date().toISOString().slice(11, 19) + " UTC." }),
        h("div", { className: "scroll" }, table("Queues", ["Queue", "Depth", "Oldest waiting", "In flight", "Consumers alive", "Consumers"],
          (q.queues || []).map(function (x) {
            return h("tr", { className: x.consumers_alive ? null : "alarm" }, h("th", { scope: "row", text: x.queue }),
              h("td", { className: "num", text: x.depth }), h("td", { className: "num", text: age(x.oldest_age_s) }),
              h("td", { className: "num", text: x.in_flight }),
              h("td", { className: "num", text: x.consumers_alive + (x.consumers_alive ? "" : " (no consumer!)") }),
              h("td", { text: (x.consumers || []).join(", ") || "none" }));
          }), { id: "queue-table" })),
        h("dl", { className: "facts" },
          h("dt", { text: "Recompute lag (write to status)" }),
          h("dd", { text: lag.samples ? "p50 " + lag.p50 + " ms, p99 " + lag.p99 + " ms (" + lag.samples + " samples)" : "no samples yet" }),
          h("dt", { text: "Backlog" }),
          h("dd", { text: Object.keys(q.backlog || {}).map(function (k) { return k + ": " + q.backlog[k].dirty + " dirty, oldest " + age(q.backlog[k].oldest_age_s); }).join("; ") }),
          h("dt", { text: "Dead letters" }),
          h("dd", { id: "dead-count", text: Object.keys(q.failed || {}).map(function (k) { return k + ": " + q.failed[k]; }).join(", ") }),
          h("dt", { text: "Redis memory" }),
          h("dd", { text: q.redis_memory ? (q.redis_memory.used_bytes / 1048576).toFixed(1) + " MiB" + (q.redis_memory.max_bytes ? " of " + (q.redis_memory.max_bytes / 1048576).toFixed(0) + " MiB" : " (no limit)") + (q.redis_memory.near_limit ? ": near the limit!" : "") : "n/a" })),
        h("div", { className: "scroll" }, table("Workers (" + q.workers_alive + " alive)", ["Worker", "Alive", "Last heartbeat", "Queues"],
          (q.workers || []).map(function (w) {
            return h("tr", { className: w.alive ? null : "alarm" }, h("th", { scope: "row", text: w.worker }),
              h("td", { text: w.alive ? "yes" : "no" }), h("td", { className: "num", text: w.age_s.toFixed(1) + " s ago" }),
              h("td", { text: (w.queues || []).join(", ") }));
          }), { id: "worker-table" })),
        h("div", { className: "scroll" }, table("Dead letters (newest first; retry: POST /v1/ops/dead-letters/{kind}/{id}/retry)",
          ["Kind", "Id", "Failed at", "Error"],
          dead.length ? dead.slice(0, 100).map(function (d) {
            var href = (d.kind === "patient" ? "#/patients/" : "#/cohorts/") + enc(d.id);
            return h("tr", {}, h("td", { text: d.kind }), h("td", {}, h("a", { href: href, text: d.id })),
              h("td", { text: new Date(d.failed_ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" }),
              h("td", { text: d.error || "" }));
          }) : [h("tr", {}, h("td", { colspan: "4", text: "None." }))], { id: "dead-table" })));
      scheduleOps(token);
      return section;
    });
  }

  function scheduleOps(token) {
    timer = setTimeout(function () {
      if (token !== renderToken) return;
      // Re-render in place: the view keeps its address and focus stays where the user left it.
      opsView(token).then(function (node) {
        if (token !== renderToken) return;
        showMessage("");
        var old = document.getElementById("ops");
        if (old) old.replaceWith(node);
      }, function (err) {
        if (token !== renderToken) return;
        showMessage(err.message + " (the figures below are from the last answer; retrying)");
        scheduleOps(token);  // an on-call screen keeps trying through a restart of the API
      });
    }, OPS_REFRESH_MS);
  }

  // ---- wiring -------------------------------------------------------------------------------------

  document.getElementById("key-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var input = document.getElementById("key-input");
    setKey(input.value.trim());
    input.value = "";
    reference = null;
    route();
  });
  document.getElementById("forget-key").addEventListener("click", function () {
    setKey("");
    reference = null;
    route();
  });
  document.getElementById("search").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var id = document.getElementById("search-id").value.trim();
    // Into the fragment only: the browser never sends it, so the id reaches no server log as a URL.
    if (id) location.hash = "#/patients/" + enc(id);
  });
  window.addEventListener("hashchange", function () {
    route();
    // A new view: screen readers and keyboard users start at its content, not at the link they used.
    main.focus({ preventScroll: true });
  });
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      charts.forEach(function (c) {
        var box = c.root.parentNode;
        c.setSize({ width: chartWidth(box), height: c.height });
      });
    }, 150);
  });
  route();
})();
