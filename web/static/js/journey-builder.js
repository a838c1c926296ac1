/* Journey builder: the draft drawn as a graph (vendored Cytoscape.js), a form per step,
 * the whole definition as JSON, and live validation by the server's own validator.
 *
 * No framework and no inline script (CSP script-src 'self'). The JSON textarea of the form is
 * what the server saves; without JavaScript it is the editor, and the page shows the steps,
 * their counts and the draft's problems rendered by the server. Every edit here rewrites that
 * textarea, redraws the graph, and asks POST validate_url for the problems (with their paths).
 */
(function () {
  "use strict";

  var graphBox = document.getElementById("jb-graph");
  if (!graphBox || typeof window.cytoscape !== "function") { return; }

  var config = JSON.parse(graphBox.getAttribute("data-config"));
  var text = JSON.parse(graphBox.getAttribute("data-text"));
  var csrf = graphBox.getAttribute("data-csrf");
  var textarea = document.getElementById("jb-definition");
  var stepList = document.getElementById("jb-steps");
  var side = document.getElementById("jb-side");
  var sideTitle = document.getElementById("jb-side-title");
  var formBox = document.getElementById("jb-step-form");
  var problemsBox = document.getElementById("jb-problems");
  var toolbar = document.getElementById("jb-toolbar");
  var editable = config.editable;
  var TRIGGER = "__trigger";
  var LINKS = ["next", "timeout_next", "then", "else"];
  var SCALARS = { "true": true, "false": false, "null": null };
  var typeLabels = {};
  config.types.forEach(function (t) { typeLabels[t.type] = t.label; });

  var defn = null;          // the definition being edited
  var selected = null;      // a step id, TRIGGER for the journey settings, or null
  var problemSteps = {};    // step id -> true when a problem's path points into it
  var structure = "";       // the graph's nodes and edges last laid out
  var timer = null;
  var sequence = 0;
  var cy;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { node.textContent = attrs[key]; }
      else if (key === "className") { node.className = attrs[key]; }
      else { node.setAttribute(key, attrs[key]); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }

  function steps() { return Array.isArray(defn.steps) ? defn.steps : []; }

  function findStep(id) {
    var list = steps();
    for (var i = 0; i < list.length; i++) { if (list[i] && list[i].id === id) { return list[i]; } }
    return null;
  }

  /* The edges a step draws: [target step id or null (holdout), label, step-log outcome]. */
  function links(step) {
    if (step.type === "wait_for_event") {
      return [[step.next, text.event_edge, "event"], [step.timeout_next, text.timeout_edge, "timeout"]];
    }
    if (step.type === "branch") {
      return [[step.then, text.then_edge, "then"], [step["else"], text.else_edge, "else"]];
    }
    if (step.type === "split") {
      return (Array.isArray(step.paths) ? step.paths : []).map(function (path, n) {
        var label = (path.percent || 0) + "%" + (path.label ? " " + path.label : "");
        return path.holdout ? [null, label + " " + text.holdout, "holdout"] : [path.next, label, "path:" + n];
      });
    }
    return [[step.next, "", "done"]];
  }

  /* How many people took an edge (published journeys), appended to its label. */
  function edgeLabel(step, pair) {
    var counts = config.stats[step.id];
    var taken = counts && counts.outcomes ? counts.outcomes[pair[2]] : undefined;
    if (taken === undefined) { return pair[1]; }
    return pair[1] ? pair[1] + " · " + taken : String(taken);
  }

  function nodeLabel(step) {
    var lines = [typeLabels[step.type] || String(step.type), step.label || step.id];
    var counts = config.stats[step.id];
    if (counts) {
      lines.push(text.entered + " " + counts.entered + " · " + text.now + " " + counts.now +
        (step.type === "send" || counts.sent || counts.skipped
          ? " · " + text.sent + " " + counts.sent + " · " + text.skipped + " " + counts.skipped : ""));
    }
    return lines.join("\n");
  }

  function elements() {
    var nodes = [];
    var edges = [];
    var seen = {};
    var trigger = defn.trigger || {};
    var triggerText = trigger.event || trigger.type || "";
    nodes.push({ data: { id: TRIGGER, step: TRIGGER, label: text.trigger + "\n" + triggerText, kind: "trigger" } });
    steps().forEach(function (step, index) {
      if (!step || typeof step !== "object") { return; }
      var key = typeof step.id === "string" && !seen["s:" + step.id] ? "s:" + step.id : "s:#" + index;
      seen[key] = true;
      nodes.push({ data: { id: key, step: step.id, label: nodeLabel(step), kind: String(step.type) } });
    });
    function target(id) {
      if (!seen["s:" + id]) {
        seen["s:" + id] = true;
        nodes.push({ data: { id: "s:" + id, step: null, label: text.missing + "\n" + id, kind: "missing" } });
      }
      return "s:" + id;
    }
    if (typeof defn.start === "string") {
      edges.push({ data: { id: "e:start", source: TRIGGER, target: target(defn.start), label: "" } });
    }
    steps().forEach(function (step, index) {
      if (!step || typeof step !== "object" || typeof step.id !== "string") { return; }
      links(step).forEach(function (pair, n) {
        var to = pair[0];
        if (pair[0] === null) {
          to = "h:" + index + ":" + n;
          nodes.push({ data: { id: to, step: null, label: text.holdout, kind: "holdout" } });
        } else if (typeof to === "string" && to) {
          to = target(to);
        } else {
          return;
        }
        edges.push({ data: { id: "e:" + index + ":" + n, source: "s:" + step.id, target: to, label: edgeLabel(step, pair) } });
      });
    });
    return nodes.concat(edges);
  }

  var STYLE = [
    { selector: "node", style: {
      "shape": "round-rectangle", "width": 180, "height": 62, "background-color": "#e6f4f3",
      "border-width": 1, "border-color": "#0b7a75", "label": "data(label)", "text-wrap": "wrap",
      "text-max-width": 168, "text-valign": "center", "font-size": 12, "color": "#1f2933" } },
    { selector: "node[kind = 'trigger']", style: { "background-color": "#0f2a2e", "color": "#fff", "shape": "round-tag" } },
    { selector: "node[kind = 'wait'], node[kind = 'wait_for_event']", style: { "background-color": "#fef0c7", "border-color": "#b54708" } },
    { selector: "node[kind = 'branch'], node[kind = 'split']", style: { "background-color": "#e0eaff", "border-color": "#3538cd", "shape": "diamond", "height": 80, "width": 190 } },
    { selector: "node[kind = 'exit']", style: { "background-color": "#eef2f6", "border-color": "#6b7780", "shape": "ellipse" } },
    { selector: "node[kind = 'missing'], node[kind = 'holdout']", style: { "border-style": "dashed", "background-color": "#fff", "height": 40, "width": 120 } },
    { selector: "node[kind = 'missing']", style: { "border-color": "#b42318", "color": "#b42318" } },
    { selector: "node.problem", style: { "border-color": "#b42318", "border-width": 3, "background-color": "#fee4e2" } },
    { selector: "node.chosen", style: { "border-color": "#1570ef", "border-width": 4, "underlay-color": "#1570ef", "underlay-opacity": 0.15, "underlay-padding": 6 } },
    { selector: "edge", style: {
      "width": 1.5, "line-color": "#9aa5b1", "target-arrow-color": "#9aa5b1", "target-arrow-shape": "triangle",
      "curve-style": "bezier", "label": "data(label)", "font-size": 10, "color": "#52606d",
      "text-background-color": "#fff", "text-background-opacity": 1, "text-background-padding": 2 } }
  ];

  function layout() {
    cy.layout({
      name: "breadthfirst", directed: true, roots: "#" + TRIGGER, spacingFactor: 1.05, padding: 24,
      // The layout spaces levels by the widest node; steps are wide and flat, so close up rows.
      transform: function (node, position) { return { x: position.x, y: position.y * 0.5 }; }
    }).run();
    if (cy.zoom() > 1.1) { cy.zoom(1.1); cy.center(); }  // a short journey need not be huge
  }

  function drawGraph() {
    var items = elements();
    var signature = JSON.stringify(items.map(function (e) { return [e.data.id, e.data.source, e.data.target]; }));
    if (signature !== structure) {
      cy.elements().remove();
      cy.add(items);
      layout();
      structure = signature;
    } else {
      items.forEach(function (e) { cy.getElementById(e.data.id).data(e.data); });
    }
    cy.nodes().forEach(function (node) {
      var step = node.data("step");
      node.toggleClass("problem", !!(step && problemSteps[step]));
      node.toggleClass("chosen", !!step && step === selected);
    });
  }

  function drawList() {
    stepList.textContent = "";
    steps().forEach(function (step) {
      if (!step || typeof step !== "object") { return; }
      var button = el("button", { type: "button", className: "link", "data-step": step.id || "",
        text: (step.id || "?") + " · " + (typeLabels[step.type] || step.type) + (step.label ? " · " + step.label : "") });
      button.addEventListener("click", function () { select(step.id); });
      var item = el("li", { "data-step": step.id || "" }, [button]);
      if (problemSteps[step.id]) { item.className = "problem"; }
      if (step.id === selected) { item.className += " chosen"; }
      stepList.appendChild(item);
    });
  }

  function select(id) {
    selected = id;
    drawGraph();
    drawList();
    drawForm();
    if (toolbar.deleteButton) { toolbar.deleteButton.disabled = !editable || !findStep(selected); }
  }

  /* Something changed in the definition: write the JSON, redraw, validate. */
  function changed(redrawForm) {
    textarea.value = JSON.stringify(defn, null, 2);
    textarea.removeAttribute("aria-invalid");
    markDirty();
    drawGraph();
    drawList();
    if (redrawForm) { drawForm(); }
    scheduleValidate();
  }

  function markDirty() {
    var dirty = document.getElementById("jb-dirty");
    var unsaved = document.getElementById("jb-unsaved");
    var publish = document.querySelector("#jb-publish-form button[type=submit]");
    if (dirty) { dirty.hidden = false; }
    if (unsaved) { unsaved.hidden = false; }
    if (publish) { publish.disabled = true; }
  }

  // -- form widgets: each edits one key of an object and calls changed() ----------------------

  function field(key, input, hint) {
    input.setAttribute("data-field", key);
    if (!editable) { input.disabled = true; }
    return el("label", { text: hint || text.fields[key] || key }, [input]);
  }

  function setValue(obj, key, value, redraw) {
    if (value === undefined || value === "") { delete obj[key]; } else { obj[key] = value; }
    changed(redraw);
  }

  function textInput(obj, key, options) {
    options = options || {};
    var input = el("input", { type: options.type || "text" });
    input.value = obj[key] === undefined || obj[key] === null ? "" : String(obj[key]);
    input.addEventListener("input", function () {
      var raw = input.value.trim();
      var value = raw;
      if (options.number && raw !== "" && !isNaN(Number(raw))) { value = Number(raw); }
      if (options.scalar && raw in SCALARS) { value = SCALARS[raw]; }
      setValue(obj, key, value, false);
    });
    return field(key, input, options.label);
  }

  function choice(obj, key, options, settings) {
    settings = settings || {};
    var input = el("select");
    if (settings.none) { input.appendChild(el("option", { value: "", text: text.none })); }
    var current = obj[key] === undefined ? settings.fallback : obj[key];
    options.forEach(function (option) {
      var node = el("option", { value: String(option.value), text: option.label });
      if (String(option.value) === String(current)) { node.selected = true; }
      input.appendChild(node);
    });
    if (current !== undefined && current !== null && current !== "" &&
        !options.some(function (o) { return String(o.value) === String(current); })) {
      var unknown = el("option", { value: String(current), text: String(current) + " ?" });
      unknown.selected = true;
      input.appendChild(unknown);
    }
    input.addEventListener("change", function () {
      var value = input.value;
      if (settings.numeric && value !== "") { value = Number(value); }
      if (settings.onChange) { settings.onChange(value); } else { setValue(obj, key, value, !!settings.redraw); }
    });
    return field(key, input, settings.label);
  }

  function stepChoice(obj, key, label) {
    var options = steps().filter(function (s) { return s && typeof s.id === "string"; })
      .map(function (s) { return { value: s.id, label: s.id + (s.label ? " · " + s.label : "") }; });
    return choice(obj, key, options, { none: true, label: label });
  }

  function jsonInput(obj, key, rows, label) {
    var input = el("textarea", { rows: String(rows || 3), spellcheck: "false" });
    input.value = obj[key] === undefined ? "" : JSON.stringify(obj[key], null, 1);
    input.addEventListener("input", function () {
      try {
        setValue(obj, key, input.value.trim() ? JSON.parse(input.value) : undefined, false);
        input.removeAttribute("aria-invalid");
      } catch (e) {
        input.setAttribute("aria-invalid", "true");
      }
    });
    return field(key, input, label);
  }

  function checkbox(obj, key) {
    var input = el("input", { type: "checkbox" });
    input.checked = !!obj[key];
    input.addEventListener("change", function () {
      if (key === "holdout" && input.checked) { delete obj.next; }  // a holdout path leads nowhere
      setValue(obj, key, input.checked || undefined, true);
    });
    var label = field(key, input);
    label.className = "check";
    return label;
  }

  // -- the forms --------------------------------------------------------------------------------

  function drawForm() {
    formBox.textContent = "";
    if (selected === TRIGGER) {
      sideTitle.textContent = text.settings;
      settingsForm().forEach(function (node) { formBox.appendChild(node); });
      return;
    }
    var step = findStep(selected);
    if (!step) {
      sideTitle.textContent = text.step;
      formBox.appendChild(el("p", { className: "muted", text: text.select_hint }));
      return;
    }
    sideTitle.textContent = text.step + " " + step.id;
    formBox.appendChild(idInput(step));
    formBox.appendChild(choice(step, "type", config.types.map(function (t) {
      return { value: t.type, label: t.label };
    }), { onChange: function (type) { retype(step, type); } }));
    formBox.appendChild(textInput(step, "label"));
    (FORMS[step.type] || function () { return []; })(step).forEach(function (node) { formBox.appendChild(node); });
  }

  function idInput(step) {
    var input = el("input", { type: "text", maxlength: "40" });
    input.value = step.id;
    input.addEventListener("change", function () {
      var id = input.value.trim();
      if (!id || (id !== step.id && findStep(id))) { input.setAttribute("aria-invalid", "true"); return; }
      rename(step.id, id);
      selected = id;
      changed(true);
    });
    return field("id", input);
  }

  function rename(from, to) {
    if (defn.start === from) { defn.start = to; }
    steps().forEach(function (step) {
      if (!step || typeof step !== "object") { return; }
      if (step.id === from) { step.id = to; }
      LINKS.forEach(function (key) { if (step[key] === from) { step[key] = to; } });
      (Array.isArray(step.paths) ? step.paths : []).forEach(function (p) { if (p.next === from) { p.next = to; } });
    });
  }

  /* A new type keeps the id, label and onward link; the other fields start from defaults. */
  function retype(step, type) {
    var keep = { id: step.id, label: step.label, next: step.next };
    Object.keys(step).forEach(function (key) { delete step[key]; });
    Object.assign(step, blank(type, keep.id));
    if (keep.label) { step.label = keep.label; }
    if (keep.next && type !== "split" && type !== "exit") {
      step[type === "branch" ? "then" : "next"] = keep.next;
    }
    changed(true);
  }

  function blank(type, id) {
    var defaults = {
      wait: { duration: "1d" },
      wait_for_event: { event: "", timeout: "7d" },
      branch: { condition: { and: [] } },
      split: { paths: [{ percent: 90 }, { percent: 10, holdout: true }] },
      send: { channel: "wechat" },
      issue_coupon: {},
      award_points: { action: config.actions[0] || "" },
      update_trait: { trait: "", value: "" },
      webhook: { url: "https://" },
      invite_to_meeting: { meeting_id: null },
      exit: {}
    };
    return Object.assign({ id: id, type: type }, JSON.parse(JSON.stringify(defaults[type] || {})));
  }

  function waitForm(step) {
    var mode = step.until_trait !== undefined ? "trait" : step.until_time !== undefined ? "time" : "duration";
    var holder = { mode: mode };
    var modes = [{ value: "duration", label: text.by_duration }, { value: "time", label: text.by_time },
      { value: "trait", label: text.by_trait }];
    var modeField = choice(holder, "mode", modes, { onChange: function (value) {
      ["duration", "until_time", "until_trait", "offset_days", "at"].forEach(function (k) { delete step[k]; });
      if (value === "duration") { step.duration = "1d"; }
      else if (value === "time") { step.until_time = "10:00"; }
      else { step.until_trait = ""; step.offset_days = 0; step.at = "10:00"; }
      changed(true);
    } });
    var fields = [modeField];
    if (mode === "duration") { fields.push(textInput(step, "duration")); }
    if (mode === "time") { fields.push(textInput(step, "until_time", { type: "time" })); }
    if (mode === "trait") {
      fields.push(textInput(step, "until_trait"), textInput(step, "offset_days", { type: "number", number: true }),
        textInput(step, "at", { type: "time" }));
    }
    return fields.concat([stepChoice(step, "next")]);
  }

  function contentChoice(step, channel) {
    var items = config.content.filter(function (c) { return c.channels.indexOf(channel) >= 0; })
      .map(function (c) { return { value: c.id, label: "#" + c.id + " " + c.name }; });
    return choice(step, "content_id", items, { none: true, numeric: true });
  }

  var FORMS = {
    wait: waitForm,
    wait_for_event: function (step) {
      return [textInput(step, "event"), jsonInput(step, "where", 2), checkbox(step, "match_entry_key"),
        textInput(step, "timeout"), stepChoice(step, "next"), stepChoice(step, "timeout_next")];
    },
    branch: function (step) {
      return [jsonInput(step, "condition", 6), stepChoice(step, "then"), stepChoice(step, "else")];
    },
    split: splitForm,
    send: function (step) {
      var channel = choice(step, "channel", config.channels, { redraw: true });
      return [channel, contentChoice(step, step.channel), stepChoice(step, "next")];
    },
    issue_coupon: function (step) {
      var campaigns = config.campaigns.map(function (c) {
        return { value: c.id, label: "#" + c.id + " " + c.name + " (" + c.status + ")" };
      });
      return [choice(step, "campaign_id", campaigns, { none: true, numeric: true }), stepChoice(step, "next")];
    },
    award_points: function (step) {
      var actions = config.actions.map(function (a) { return { value: a, label: a }; });
      return [choice(step, "action", actions, { none: true }), stepChoice(step, "next")];
    },
    update_trait: function (step) {
      return [textInput(step, "trait"), textInput(step, "value", { number: true, scalar: true }), stepChoice(step, "next")];
    },
    webhook: function (step) {
      return [textInput(step, "url", { type: "url" }), contentChoice(step, "webhook"), stepChoice(step, "next")];
    },
    invite_to_meeting: function (step) {
      return [textInput(step, "meeting_id", { type: "number", number: true }), stepChoice(step, "next")];
    },
    exit: function () { return []; }
  };

  function splitForm(step) {
    if (!Array.isArray(step.paths)) { step.paths = []; }
    var rows = step.paths.map(function (path, index) {
      var remove = el("button", { type: "button", className: "link", text: text.remove });
      remove.disabled = !editable;
      remove.addEventListener("click", function () { step.paths.splice(index, 1); changed(true); });
      var parts = [textInput(path, "percent", { type: "number", number: true }), checkbox(path, "holdout")];
      if (!path.holdout) { parts.push(stepChoice(path, "next")); }
      parts.push(textInput(path, "label"), remove);
      return el("fieldset", { className: "jb-path" }, parts);
    });
    var add = el("button", { type: "button", className: "secondary", text: text.add_path });
    add.disabled = !editable;
    add.addEventListener("click", function () { step.paths.push({ percent: 10 }); changed(true); });
    return rows.concat([add]);
  }

  function settingsForm() {
    if (!defn.audience || typeof defn.audience !== "object") { defn.audience = { kind: "patient" }; }
    var segments = config.segments.map(function (s) { return { value: s.id, label: "#" + s.id + " " + s.name }; });
    var starts = steps().filter(function (s) { return s && typeof s.id === "string"; })
      .map(function (s) { return { value: s.id, label: s.id }; });
    return [
      choice(defn, "category", [{ value: "marketing", label: text.marketing }, { value: "service", label: text.service }],
        { fallback: "marketing" }),
      choice(defn.audience, "kind", [{ value: "patient", label: text.patient }, { value: "hcp", label: text.hcp }],
        { label: text.fields.audience_kind }),
      choice(defn.audience, "segment_id", segments, { none: true, numeric: true, label: text.fields.audience_segment }),
      choice(defn, "start", starts, { none: true, redraw: true }),
      jsonInput(defn, "trigger", 3),
      jsonInput(defn, "entry", 2),
      jsonInput(defn, "exit", 2),
      jsonInput(defn, "goal", 2),
      jsonInput(defn, "quiet_hours", 2),
      choice(defn, "frequency_cap_policy", [{ value: "skip", label: text.skip }, { value: "defer", label: text.defer }],
        { fallback: "skip" })
    ];
  }

  // -- toolbar: add, delete, settings, fit ------------------------------------------------------

  function uniqueId(type) {
    var n = 1;
    while (findStep(type + "_" + n)) { n += 1; }
    return type + "_" + n;
  }

  function addStep(type) {
    var step = blank(type, uniqueId(type));
    var from = findStep(selected);
    if (from && ["split", "exit", "branch", "wait_for_event"].indexOf(from.type) < 0 && !from.next) {
      from.next = step.id;  // grow the path being built
    }
    if (!Array.isArray(defn.steps)) { defn.steps = []; }
    defn.steps.push(step);
    if (!defn.start) { defn.start = step.id; }
    selected = step.id;
    changed(true);
  }

  function deleteStep() {
    var id = selected;
    if (!findStep(id)) { return; }
    defn.steps = steps().filter(function (s) { return !s || s.id !== id; });
    steps().forEach(function (step) {
      if (!step || typeof step !== "object") { return; }
      // Optional links are cut; required ones stay dangling so the validator names them.
      if (step.next === id && ["wait_for_event", "wait"].indexOf(step.type) < 0) { delete step.next; }
      (Array.isArray(step.paths) ? step.paths : []).forEach(function (p) { if (p.next === id) { delete p.next; } });
    });
    if (defn.start === id) { defn.start = steps().length && steps()[0] ? steps()[0].id : undefined; }
    selected = null;
    changed(true);
  }

  function buildToolbar() {
    var type = el("select", { "aria-label": text.fields.type, "data-field": "new_type" });
    config.types.forEach(function (t) { type.appendChild(el("option", { value: t.type, text: t.label })); });
    var add = el("button", { type: "button", className: "secondary", text: text.add_step, "data-action": "add" });
    add.addEventListener("click", function () { addStep(type.value); });
    var remove = el("button", { type: "button", className: "secondary", text: text.delete_step, "data-action": "delete" });
    remove.addEventListener("click", deleteStep);
    remove.disabled = true;
    toolbar.deleteButton = remove;
    var settings = el("button", { type: "button", className: "secondary", text: text.settings, "data-action": "settings" });
    settings.addEventListener("click", function () { select(TRIGGER); });
    var fit = el("button", { type: "button", className: "link", text: text.fit });
    fit.addEventListener("click", function () { layout(); });
    if (editable) { [type, add, remove].forEach(function (n) { toolbar.appendChild(n); }); }
    [settings, fit].forEach(function (n) { toolbar.appendChild(n); });
  }

  // -- live validation --------------------------------------------------------------------------

  function stepOfPath(path) {
    var match = /steps(?:\/|\[|\.)(\d+)/.exec(path || "");
    var step = match ? steps()[Number(match[1])] : null;
    return step && typeof step.id === "string" ? step.id : null;
  }

  function showProblems(problems) {
    problemSteps = {};
    problemsBox.textContent = "";
    if (!problems.length) {
      problemsBox.appendChild(el("p", { className: "ok-text", text: text.valid }));
    } else {
      problemsBox.appendChild(el("p", { text: text.invalid }));
      problemsBox.appendChild(el("ul", {}, problems.map(function (p) {
        var step = stepOfPath(p.path);
        if (step) { problemSteps[step] = true; }
        var item = el("li", { "data-step": step || "" }, [el("code", { text: p.path || "/" }),
          document.createTextNode(" " + p.message)]);
        if (step) {
          var go = el("button", { type: "button", className: "link", text: " → " + step });
          go.addEventListener("click", function () { select(step); });
          item.appendChild(go);
        }
        return item;
      })));
    }
    drawGraph();
    drawList();
  }

  function scheduleValidate() {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(validate, 250);
  }

  function validate() {
    var mine = ++sequence;
    problemsBox.setAttribute("aria-busy", "true");
    fetch(config.validate_url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify({ definition: defn })
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    }).then(function (result) {
      if (mine !== sequence) { return; }
      problemsBox.removeAttribute("aria-busy");
      if (!result.ok) { throw new Error("validate failed"); }
      showProblems(result.body.problems || []);
    }).catch(function () {
      if (mine !== sequence) { return; }
      problemsBox.removeAttribute("aria-busy");
      problemsBox.textContent = text.failed;
    });
  }

  // -- start ------------------------------------------------------------------------------------

  function load() {
    try {
      var parsed = JSON.parse(textarea.value);
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) { throw new Error("not an object"); }
      defn = parsed;
      return true;
    } catch (e) {
      sequence += 1;  // a pending answer about the old JSON must not overwrite this message
      problemsBox.textContent = "";
      problemsBox.appendChild(el("p", { className: "field-error", text: text.bad_json + " " + e.message }));
      textarea.setAttribute("aria-invalid", "true");
      return false;
    }
  }

  textarea.addEventListener("input", function () {
    if (!load()) { return; }
    textarea.removeAttribute("aria-invalid");
    markDirty();
    if (selected !== TRIGGER && !findStep(selected)) { selected = null; }
    drawGraph();
    drawList();
    drawForm();
    scheduleValidate();
  });
  document.getElementById("jb-form").addEventListener("submit", function () {
    // Publishing stays off until the page reloads with the saved draft.
    textarea.value = JSON.stringify(defn, null, 2);
  });

  if (!load()) { return; }
  graphBox.hidden = false;
  toolbar.hidden = false;
  side.hidden = false;
  document.getElementById("jb-json-box").open = false;
  cy = window.cytoscape({
    container: graphBox, style: STYLE, elements: [], minZoom: 0.3, maxZoom: 2.5, wheelSensitivity: 0.3,
    autoungrabify: false, boxSelectionEnabled: false
  });
  cy.on("tap", "node", function (event) {
    var step = event.target.data("step");
    if (step) { select(step); }
  });
  buildToolbar();
  drawGraph();
  drawList();
  // For tests and debugging in the console: the graph and the definition being edited.
  window.journeyBuilder = { cy: cy, definition: function () { return defn; }, select: select };
  validate();
})();
