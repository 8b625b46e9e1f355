/* The dashboard (GET /dashboard): a read-only view of the JSON API, one view per URL fragment.
 *
 * Views: #/cohorts, #/cohorts/<id>, #/compare/<a>/<b>, #/patients/<id>, #/ops. The API key is typed in
 * once and kept in sessionStorage (gone with the tab); "?key=<key>" inside the fragment is taken too
 * when the tab holds no key yet (a link never replaces the key in use), and removed from the address bar. The fragment never reaches the server, so patient ids in it
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

  function withCi(est, lo, hi, none) {
    // `none`: what a missing estimate means where it is shown (a horizon beyond the follow-up).
    if (est === null || est === undefined) return none || "not reached";
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
    // Unchanged text is left alone: rewriting it would make a screen reader announce the alert again.
    if (message.textContent !== text) message.textContent = text;
    message.hidden = !text;
  }

  // The service's id pattern (shared/schemas.py ID_PATTERN): a fragment naming anything else ("..",
  // "a/b") is refused here, before any request.
  var ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;

  function badId(id) {
    return Promise.reject(new ApiError(404, "Not a valid id: " + JSON.stringify(id) + " (letters, digits and . _ : - only, up to 64)."));
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
    if (!key) return Promise.reject(new ApiError(401, "Enter an API key above (one with the status:read scope)."));
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

  // A view's address: "#/..." (or no fragment at all). Any other fragment ("#main", the skip link's
  // target) is an anchor in the page, not a view.
  function isViewHash(hash) { return !hash || hash === "#" || hash.indexOf("#/") === 0; }

  var keyNote = "";

  function parseHash() {
    var raw = location.hash.replace(/^#/, "");
    var q = raw.indexOf("?");
    var path = q >= 0 ? raw.slice(0, q) : raw;
    var params = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : "");
    keyNote = "";
    if (params.has("key")) {
      var given = params.get("key");
      // A link never replaces the key this tab already holds (a crafted link could otherwise swap in
      // someone else's key): taken only when none is stored, or when it is the same.
      if (!getKey() || getKey() === given) setKey(given);
      else keyNote = "The link carried an API key; it was ignored because this tab already has one (Forget key first to use another).";
      params.delete("key");
      var rest = params.toString();
      // Out of the address bar at once (the browser's history may still hold the address as typed).
      history.replaceState(null, "", location.pathname + location.search + "#" + path + (rest ? "?" + rest : ""));
    }
    if (path.charAt(0) !== "/") return ["cohorts"];
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
    var ids = parts.slice(1).filter(function (p) { return !ID.test(p); });
    if (ids.length && ["cohorts", "compare", "patients"].indexOf(parts[0]) >= 0) view = badId(ids[0]);
    else if (parts[0] === "cohorts" && parts.length === 1) view = cohortsView();
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
      showMessage(keyNote);
    }, function (err) {
      if (token !== renderToken) return;
      clearView();
      var text = err && err.message ? err.message : String(err);
      var status = err && err.status;
      showMessage(keyNote ? keyNote + " " + text : text);
      main.appendChild(h("section", { className: "error-view" },
        h("h2", { text: status === 401 ? "API key needed" : status === 0 ? "The service did not answer" : "Cannot show this view" }),
        h("p", { className: "error", "data-status": status, text: text })));
      if (status === 401 && !getKey()) document.getElementById("key-input").focus();
      // An on-call screen opened during an outage keeps trying (quietly: the alert is not re-announced).
      if (parts[0] === "ops" && parts.length === 1 && status !== 401 && status !== 403) retryOps(token);
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
        // One cohort's statistics failing (not computed yet, a 500) leaves the other rows standing.
        return api("v1/cohorts/" + enc(c.cohort_id) + "/statistics").catch(function (err) {
          if (err && err.status === 401) throw err;
          return { failed: err && err.message ? err.message : String(err) };
        });
      })).then(function (stats) {
        var rows = cohorts.map(function (c, i) {
          var s = stats[i];
          if (s.failed) {
            return h("tr", { "data-cohort": c.cohort_id, className: "alarm" },
              h("th", { scope: "row" }, h("a", { href: "#/cohorts/" + enc(c.cohort_id), text: c.cohort_id })),
              h("td", { className: "num", text: c.n !== undefined ? c.n : "" }),
              h("td", { colspan: "5", className: "error", text: "Statistics unavailable: " + s.failed }));
          }
          var k = horizonIndex(s, 12);
          var aj = s.aalen_johansen || {};
          var est = k >= 0 ? aj.estimate[k] : null;
          return h("tr", { "data-cohort": c.cohort_id },
            h("th", { scope: "row" }, h("a", { href: "#/cohorts/" + enc(c.cohort_id), text: c.cohort_id })),
            h("td", { className: "num", text: s.n !== undefined ? s.n : c.n }),
            h("td", { className: "num", text: s.n_evaluable !== undefined ? s.n_evaluable : "pending" }),
            h("td", { text: (c.definition || {}).endpoint || "" }),
            h("td", { className: "num fig12", "data-value": est === null || est === undefined ? "null" : String(est),
              text: k >= 0 ? withCi(est, aj.lower[k], aj.upper[k], "beyond follow-up") : "pending" }),
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
      series.push({ label: c.label, stroke: c.colour, width: 2, paths: stepped, points: { show: false }, dash: c.dash,
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
      if (c.dash) swatch.style.borderStyle = "dashed";
      return h("li", {}, swatch, c.label + (c.dash ? " (dashed line)" : " (line)") + " with its 95% band (shaded)");
    })));
    return u;
  }

  function horizonRows(stats, label) {
    return (stats.horizons_months || []).map(function (m, i) {
      var aj = stats.aalen_johansen, km = stats.one_minus_km;
      return h("tr", {},
        label ? h("th", { scope: "row", text: label }) : null,
        h(label ? "td" : "th", label ? { className: "num", text: m } : { scope: "row", className: "num", text: m }),
        h("td", { className: "num", text: withCi(aj.estimate[i], aj.lower[i], aj.upper[i], "beyond follow-up") }),
        h("td", { className: "num", text: withCi(km.estimate[i], km.lower[i], km.upper[i], "beyond follow-up") }),
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
        // Dashed: without competing events the two curves are one, and a solid line would hide the other.
        { label: "1 - Kaplan-Meier", colour: COLOURS.km, steps: steps(curve, "one_minus_km"), dash: [6, 4] },
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
        }), { id: "at-risk-table" }) : null));
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
        // Both rows of numbers at risk on the one grid the service gives (shared/cohorts.compared_at_risk),
        // so they line up under the axis; a curve stored before the field: each cohort's own row.
        var grid = cmp.at_risk;
        var atRisk = grid && grid.months && grid.months.length
          ? [{ label: a, months: grid.months, counts: grid.a }, { label: b, months: grid.months, counts: grid.b }]
          : atRiskOf(ca, a).concat(atRiskOf(cb, b));
        incidenceChart(figure, "Cumulative incidence (Aalen-Johansen)", [
          { label: a, colour: COLOURS.a, steps: steps(ca, "aalen_johansen") },
          { label: b, colour: COLOURS.b, steps: steps(cb, "aalen_johansen"), dash: [6, 4] },
        ], atRisk);
        section.appendChild(h("div", { className: "scroll" }, table("Figures at the horizons (95% CI)",
          ["Cohort", "Months", "Aalen-Johansen", "1 - Kaplan-Meier", "At risk"],
          horizonRows(cmp.a, a).concat(horizonRows(cmp.b, b)), { id: "compare-table" })));
        // The chart's text equivalent: every point of both curves, and the numbers at risk.
        section.appendChild(h("details", {}, h("summary", { text: "Every point of the curves and the numbers at risk (text equivalent of the chart)" }),
          [[a, ca, "curve-table-a"], [b, cb, "curve-table-b"]].map(function (x) {
            return h("div", { className: "scroll" }, table("Curve points: " + x[0], ["Months", "Aalen-Johansen", "1 - Kaplan-Meier", "At risk"],
              curvePointRows(x[1]), { id: x[2] }));
          }),
          atRisk.length ? h("div", { className: "scroll" }, table("Numbers at risk under the axis", ["Months"].concat(atRisk.map(function (r) { return r.label; })),
            atRisk[0].months.map(function (mo, i) {
              return h("tr", {}, h("td", { className: "num", text: mo }), atRisk.map(function (r) {
                return h("td", { className: "num", text: r.counts[i] });
              }));
            }), { id: "compare-at-risk-table" })) : null));
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

  function words(code) { return String(code).replace(/_/g, " "); }

  function why(reason, reasonText) {
    // A change's own coded reason, with its free text beside it.
    var parts = [reason ? words(reason) : null, reasonText || null].filter(Boolean);
    return parts.length ? " (" + parts.join(": ") + ")" : "";
  }

  function mg(dose) { return dose === null || dose === undefined ? "" : " " + dose + " mg"; }

  function lineLabel(line) { return line === null || line === undefined ? "" : ", line " + line; }

  function changeText(c, therapy) {
    var started = (therapy.lines || []).filter(function (l) { return l.started_on === c.date && l.tki === c.to_tki; })[0];
    var drugName = function (x) { return x || "TKI not recorded"; };
    var text = {
      drug: "Changed " + drugName(c.from_tki) + " to " + drugName(c.to_tki) + mg(c.to_dose_mg) + (started ? lineLabel(started.line) : ""),
      drug_or_dose: "Changed " + drugName(c.from_tki) + mg(c.from_dose_mg) + " to " + drugName(c.to_tki) + mg(c.to_dose_mg) + " (a change of drug or of dose: cannot be told)",
      dose: drugName(c.to_tki) + " dose" + mg(c.from_dose_mg) + " to" + mg(c.to_dose_mg),
      product: drugName(c.to_tki) + ": product switched (same drug and dose)",
      restart: drugName(c.to_tki) + mg(c.to_dose_mg) + " restarted",
      stop: drugName(c.from_tki) + " stopped",
    }[c.kind] || words(c.kind) + ": " + drugName(c.to_tki);
    return text + why(c.reason, c.reason_text);
  }

  function patientMarks(status) {
    // The TKI start, every change of therapy (drug, dose, product, stop, restart: status.therapy.changes,
    // each with its own reason) and the other recorded events: vertical lines on the timeline.
    var marks = [];
    var therapy = status.therapy || {};
    var first = (therapy.lines || [])[0];
    if (first && first.started_on) {
      marks.push({ date: first.started_on, text: (first.tki || "TKI not recorded") + " started" + lineLabel(first.line) });
    }
    var fromChanges = {};
    (therapy.changes || []).forEach(function (c) {
      fromChanges[c.event_id] = true;
      if (c.kind === "unchanged") return;  // the same drug, dose and product restated
      marks.push({ date: c.date, text: changeText(c, therapy) });
    });
    (status.events || []).forEach(function (e) {
      if (e.type === "tki_changed" || fromChanges[e.event_id]) return;  // a change, listed above
      marks.push({ date: e.date, text: words(e.type) + why(e.reason, e.reason_text) });
    });
    return marks.filter(function (m) { return m.date; }).sort(function (p, q) { return p.date < q.date ? -1 : p.date > q.date ? 1 : 0; });
  }

  function therapyText(status) {
    var t = status.therapy;
    if (!t) return "unknown";
    if (status.on_tki === false) {
      // current_tki is the last drug taken, not one taken now: after a stop (or death) it is history.
      var ends = (status.events || []).filter(function (e) { return e.type === "tki_stopped" || e.type === "death"; });
      var last = ends[ends.length - 1];
      return "off TKI" + (last ? " since " + last.date + (t.current_tki ? " (last: " + t.current_tki + mg(t.dose_mg) + ")" : "") : "");
    }
    return (t.current_tki || "TKI not recorded") + mg(t.dose_mg) + lineLabel(t.line);
  }

  function patientChart(container, results, status, ref) {
    var kept = results.slice().sort(function (p, q) { return seconds(p.collected_at) - seconds(q.collected_at); });
    var thresholds = ref.thresholds;
    var deepest = Math.min.apply(null, thresholds.map(function (t) { return t.is_percent_at_most; }));
    var xs = [], line = [], detected = [], undetected = [], withdrawn = [];
    var ys = kept.map(function (r) {
      var c = r.classification || {};
      return c.detectable ? c.is_percent : c.upper_is_percent || c.sensitivity_percent || null;
    });
    var positive = ys.filter(function (v) { return v !== null && v > 0; });
    // The axis reaches a decade below the deepest line, and further down for an undetectable whose
    // sensitivity is deeper still (half its value, as ymax is twice the highest), so every point is inside.
    var floor = Math.min(deepest / 10, Math.min.apply(null, positive.concat([Infinity])) / 2);
    kept.forEach(function (r, i) {
      var c = r.classification || {};
      var y = ys[i] !== null && ys[i] > 0 ? ys[i] : floor;  // withdrawn (never scored): at the foot
      xs.push(seconds(r.collected_at));
      // The trend joins consecutive detected results only: an undetectable's value is an upper bound, not
      // a level, so the line breaks there (null: a gap in uPlot), as it does at a withdrawn result.
      line.push(!r.withdrawn && c.detectable ? y : null);
      detected.push(!r.withdrawn && c.detectable ? y : null);
      undetected.push(!r.withdrawn && r.classification && !c.detectable ? y : null);
      withdrawn.push(r.withdrawn || !r.classification ? y : null);
    });
    var marks = patientMarks(status);
    var windows = (status.milestones || []).filter(function (m) { return m.window_from && m.window_to; });
    var start = (status.therapy && status.therapy.lines && status.therapy.lines[0] || {}).started_on;
    var xmin = Math.min.apply(null, xs.concat(marks.map(function (m) { return seconds(m.date); }), windows.map(function (w) { return seconds(w.window_from); })));
    var xmax = Math.max.apply(null, xs.concat(marks.map(function (m) { return seconds(m.date); }), windows.map(function (w) { return seconds(w.window_to) + 86400; })));
    var pad = Math.max(86400 * 20, (xmax - xmin) * 0.03);
    var ymax = Math.max(100, Math.max.apply(null, positive.concat([1])) * 2);

    function drawOverlay(u) {
      var ctx = u.ctx, top = u.bbox.top, height = u.bbox.height, left = u.bbox.left, width = u.bbox.width;
      var dpr = uPlot.pxRatio;
      ctx.save();
      ctx.font = (11 * dpr) + "px system-ui, sans-serif";
      // ELN 2020 milestone windows, shaded by their verdict.
      windows.forEach(function (w, i) {
        // window_to is inclusive: the shading runs to the end of that day.
        var x0 = u.valToPos(seconds(w.window_from), "x", true), x1 = u.valToPos(seconds(w.window_to) + 86400, "x", true);
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
        // Left of the line when it is near the right edge, so the label is not cut off by the plot's end.
        var right = x + ctx.measureText(m.text).width + 4 * dpr > left + width;
        ctx.textAlign = right ? "right" : "left";
        ctx.fillText(m.text, right ? x - 4 * dpr : x + 4 * dpr, top + height - (8 + 13 * (i % 5)) * dpr);
      });
      ctx.restore();
    }

    function recordDrawn(u) {
      // What was drawn, read back from the chart once it is (the tests check it against the API): the
      // y range, and per result (by id) its plotted value and whether the trend line passes through it.
      u.root.parentNode.plotted = kept.map(function (r, i) {
        var y = [u.data[2][i], u.data[3][i], u.data[4][i]].filter(function (v) { return v !== null && v !== undefined; })[0];
        return { id: r.result_id, y: y, inLine: u.data[1][i] !== null && u.data[1][i] !== undefined };
      });
      u.root.parentNode.setAttribute("data-y-min", String(u.scales.y.min));
      u.root.parentNode.setAttribute("data-y-max", String(u.scales.y.max));
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
      // Dates are UTC days (as in the tables), whatever the browser's time zone.
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      scales: { x: { time: true, range: [xmin - pad, xmax + pad] },
        y: { distr: 3, log: 10, range: [floor, ymax] } },
      series: [
        { label: "Date", value: function (u, v) { return v === null ? "-" : new Date(v * 1000).toISOString().slice(0, 10); } },
        { label: "Trend (detected results)", stroke: "#1f5fa8", width: 1.5, points: { show: false }, value: val },
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
      hooks: { draw: [drawOverlay, recordDrawn] },
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
      h("dt", { text: "Therapy" }), h("dd", { id: "therapy-now", text: therapyText(status) }),
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
      figure.appendChild(h("figcaption", { text: "Filled: detected, joined by the trend line; open: undetectable, drawn at the sensitivity the sample reached (an upper bound: the line breaks there); grey at the foot of the axis: withdrawn (entered in error, never scored); shaded: ELN 2020 milestone windows with their verdicts; vertical lines: therapy and clinical events." }));
      section.appendChild(h("h3", { text: "ELN 2020 milestones" }));
      var byId = {};
      results.forEach(function (x) { byId[x.result_id] = x; });
      var milestones = status.milestones || [];
      if (!milestones.length) {
        // Why there is none (no TKI start, too early...), and what the assessment rests on instead.
        var basis = status.eln_assessment_basis;
        section.appendChild(h("p", { id: "milestones-reason", text: "No milestone: " + (status.milestones_reason || "none assessed") +
          (basis && (basis.reason || basis.detail) ? ". ELN 2020 assessment based on: " + (basis.reason || basis.detail) : "") + "." }));
      }
      section.appendChild(h("div", { className: "scroll" }, table("Milestones from TKI start", ["Milestone", "Window", "Verdict", "Result", "Why"],
        milestones.map(function (m) {
          var r = m.result_id ? byId[m.result_id] : null;
          // An undetectable result's figure is the sensitivity the sample reached: an upper bound.
          var undetectable = r && r.classification && r.classification.detectable === false;
          return h("tr", {}, h("th", { scope: "row", text: m.milestone }),
            h("td", { text: m.window_from + " to " + (m.window_to || "now") }),
            h("td", { className: "verdict-" + m.assessment, text: words(m.assessment) }),
            h("td", { text: m.result_id ? m.result_id + " (" + (undetectable ? "< " : "") + isText(m.is_percent) + ")" : "none" }),
            h("td", { text: m.reason || "" }));
        }), { id: "milestone-table" })));
      section.appendChild(h("h3", { text: "Results (text equivalent of the chart)" }));
      section.appendChild(h("div", { className: "scroll" }, table("Every result, oldest first", ["Collected", "Result", "IS%", "Level", "Detected", "Sensitivity", "Status"],
        results.slice().sort(function (p, q) { return seconds(p.collected_at) - seconds(q.collected_at); }).map(function (x) {
          var c = x.classification;
          if (!c) {  // withdrawn (entered in error): never scored, drawn at the foot of the axis
            return h("tr", { className: "withdrawn", "data-result": x.result_id },
              h("td", { text: String(x.collected_at).slice(0, 10) }), h("td", { text: x.result_id }),
              h("td", { className: "num", text: "not scored" }), h("td", {}), h("td", {}), h("td", {}),
              h("td", { text: x.withdrawn ? "withdrawn" : x.status }));
          }
          return h("tr", { className: x.withdrawn ? "withdrawn" : null, "data-result": x.result_id },
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

  function opsSummary(q, dead) {
    // The few facts worth announcing when they change (the status region below; never the whole panel).
    var idle = (q.queues || []).filter(function (x) { return !x.consumers_alive; }).map(function (x) { return x.queue; });
    return (idle.length ? "No consumer on: " + idle.join(", ") + ". " : "Every queue has a consumer. ") +
      q.workers_alive + " worker" + (q.workers_alive === 1 ? "" : "s") + " alive. " +
      dead.length + " dead letter" + (dead.length === 1 ? "" : "s") + "." +
      (q.redis_memory && q.redis_memory.near_limit ? " Redis memory near its limit." : "");
  }

  function opsView(token) {
    return Promise.all([api("v1/ops/queues"), api("v1/ops/dead-letters")]).then(function (r) {
      var q = r[0], dead = r[1].dead_letters || [];
      var lag = q.recompute_lag_ms || {};
      var section = h("section", { id: "ops" }, h("h2", { text: "Operations" }),
        h("p", { id: "ops-status", role: "status", text: opsSummary(q, dead) }),
        h("p", { className: "hint", id: "ops-stamp", text: "Refreshed every " + OPS_REFRESH_MS / 1000 + " seconds; last at " + new Date().toISOString().slice(11, 19) + " UTC." }),
        h("div", { className: "scroll" }, table("Queues", ["Queue", "Depth", "Oldest waiting", "In flight", "Consumers alive", "Consumers"],
          (q.queues || []).map(function (x) {
            return h("tr", { className: x.consumers_alive ? null : "alarm", "data-key": "queue:" + x.queue }, h("th", { scope: "row", text: x.queue }),
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
            return h("tr", { className: w.alive ? null : "alarm", "data-key": "worker:" + w.worker }, h("th", { scope: "row", text: w.worker }),
              h("td", { text: w.alive ? "yes" : "no" }), h("td", { className: "num", text: w.age_s.toFixed(1) + " s ago" }),
              h("td", { text: (w.queues || []).join(", ") }));
          }), { id: "worker-table" })),
        h("div", { className: "scroll" }, table("Dead letters (newest first; retry: POST /v1/ops/dead-letters/{kind}/{id}/retry)",
          ["Kind", "Id", "Failed at", "Error"],
          dead.length ? dead.slice(0, 100).map(function (d) {
            var href = (d.kind === "patient" ? "#/patients/" : "#/cohorts/") + enc(d.id);
            return h("tr", { "data-key": "dead:" + d.kind + ":" + d.id }, h("td", { text: d.kind }),
              h("td", {}, h("a", { href: href, text: d.id, "data-key": "dead-link:" + d.kind + ":" + d.id })),
              h("td", { text: new Date(d.failed_ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" }),
              h("td", { text: d.error || "" }));
          }) : [h("tr", { "data-key": "dead:none" }, h("td", { colspan: "4", text: "None." }))], { id: "dead-table" })));
      scheduleOps(token);
      return section;
    });
  }

  function keyOf(node) { return node.nodeType === 1 ? node.getAttribute("data-key") : null; }

  function morph(old, neu) {
    // Bring `old` to look like `neu` in place: text and attributes change, elements stay (so the focus,
    // a screen reader's position and a text selection survive a refresh). Children with a data-key are
    // matched by it (a new dead letter on top does not shift the others); the rest by position.
    if (old.nodeType !== neu.nodeType || old.nodeName !== neu.nodeName || keyOf(old) !== keyOf(neu)) {
      old.parentNode.replaceChild(neu, old);
      return;
    }
    if (old.nodeType === 3) {
      if (old.nodeValue !== neu.nodeValue) old.nodeValue = neu.nodeValue;
      return;
    }
    if (old.nodeType !== 1) return;
    Array.prototype.slice.call(old.attributes).forEach(function (a) { if (!neu.hasAttribute(a.name)) old.removeAttribute(a.name); });
    Array.prototype.slice.call(neu.attributes).forEach(function (a) { if (old.getAttribute(a.name) !== a.value) old.setAttribute(a.name, a.value); });
    var oldKids = Array.prototype.slice.call(old.childNodes);
    var newKids = Array.prototype.slice.call(neu.childNodes);
    var keyed = {};
    oldKids.forEach(function (c) { if (keyOf(c)) keyed[keyOf(c)] = c; });
    var unkeyed = oldKids.filter(function (c) { return !keyOf(c); });
    var wanted = newKids.map(function (n) { return keyOf(n) ? keyed[keyOf(n)] || null : unkeyed.shift() || null; });
    // Drop what has no counterpart first, so that the rows kept never move (moving one would blur it).
    oldKids.forEach(function (c) { if (wanted.indexOf(c) < 0) old.removeChild(c); });
    newKids.forEach(function (n, i) {
      var match = wanted[i];
      if (!match) {
        old.insertBefore(n, old.childNodes[i] || null);
        return;
      }
      if (old.childNodes[i] !== match) old.insertBefore(match, old.childNodes[i] || null);
      morph(match, n);
    });
  }

  function refreshOps(node) {
    var old = document.getElementById("ops");
    if (!old) {
      while (main.firstChild) main.removeChild(main.firstChild);
      main.appendChild(node);
      return;
    }
    var focused = document.activeElement && old.contains(document.activeElement) ? keyOf(document.activeElement) : null;
    morph(old, node);
    // A focused element that had to be replaced (its row changed shape): focus its successor by key.
    if (focused && !old.contains(document.activeElement)) {
      var again = old.querySelector('[data-key="' + CSS.escape(focused) + '"]');
      if (again) again.focus({ preventScroll: true });
    }
  }

  var opsFailures = 0;

  function opsFailed(token, err) {
    opsFailures += 1;
    // Said once in the alert (showMessage leaves the same text alone); the count goes to the stamp,
    // which is not a live region, so a long outage is not re-announced every few seconds.
    if (message.hidden || message.textContent.indexOf(err.message) !== 0) {
      showMessage(err.message + " (the figures shown are from the last answer, if any; retrying every " + OPS_REFRESH_MS / 1000 + " s)");
    }
    var stamp = document.getElementById("ops-stamp");
    if (stamp) stamp.textContent = "No answer from the last " + opsFailures + " attempt" + (opsFailures === 1 ? "" : "s") + "; retrying.";
    timer = setTimeout(function () { if (token === renderToken) refreshLoop(token); }, OPS_REFRESH_MS);
  }

  function refreshLoop(token) {
    // opsView schedules the next refresh itself when it succeeds.
    opsView(token).then(function (node) {
      if (token !== renderToken) return;
      opsFailures = 0;
      showMessage("");
      refreshOps(node);
    }, function (err) {
      if (token !== renderToken) return;
      if (err && (err.status === 401 || err.status === 403)) { showMessage(err.message); return; }
      opsFailed(token, err);
    });
  }

  function scheduleOps(token) {
    timer = setTimeout(function () { if (token === renderToken) refreshLoop(token); }, OPS_REFRESH_MS);
  }

  function retryOps(token) {
    // The first load failed (the API restarting, a network blip): keep trying, into the same view.
    opsFailures = 1;
    scheduleOps(token);
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
    if (id) {
      location.hash = "#/patients/" + enc(id);
      document.getElementById("search-id").value = "";  // the id stays in the view's heading, not the box
    }
  });
  document.getElementById("skip-link").addEventListener("click", function (ev) {
    // To the content without touching the address: "#main" is not a view (and would leave the view's own).
    ev.preventDefault();
    main.focus();
  });
  window.addEventListener("hashchange", function () {
    if (!isViewHash(location.hash)) return;  // an in-page anchor ("#main"), not a view: stay
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
