/* Segments UI: the visual rule builder with a live count, and refresh-job progress.
 *
 * No framework and no inline script (CSP script-src 'self'). The builder keeps the JSON
 * definition in the form's textarea, which is what the server validates and saves; without
 * JavaScript that textarea is the editor. Field widgets come from each condition type's JSON
 * Schema fragment (data-config), so a new condition type needs no change here.
 */
(function () {
  "use strict";

  var builder = document.getElementById("seg-builder");
  if (builder) { initBuilder(builder); }
  var jobs = document.getElementById("seg-jobs");
  if (jobs && jobs.getAttribute("data-running") === "true") { followJobs(jobs); }

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

  function clone(value) { return JSON.parse(JSON.stringify(value)); }

  /* "3" -> 3, "true" -> true, anything else stays a string. */
  function scalar(text) {
    var trimmed = text.trim();
    if (trimmed === "true") { return true; }
    if (trimmed === "false") { return false; }
    if (trimmed !== "" && !isNaN(Number(trimmed))) { return Number(trimmed); }
    return trimmed;
  }

  function list(text) {
    return text.split(/[,，]/).map(function (part) { return part.trim(); })
      .filter(function (part) { return part !== ""; });
  }

  function show(value) {
    if (value === undefined || value === null) { return ""; }
    return Array.isArray(value) ? value.join(", ") : String(value);
  }

  /* The UI tree: groups (and / or / none) holding conditions or groups. */
  function toTree(node) {
    if (node && Array.isArray(node.and)) { return { kind: "and", children: node.and.map(toTree) }; }
    if (node && Array.isArray(node.or)) { return { kind: "or", children: node.or.map(toTree) }; }
    if (node && node.not) {
      var inner = node.not;
      var children = Array.isArray(inner.or) ? inner.or.map(toTree) : [toTree(inner)];
      return { kind: "none", children: children };
    }
    return { kind: "cond", node: node || {} };
  }

  function toJson(tree) {
    if (tree.kind === "cond") { return tree.node; }
    var children = tree.children.map(toJson);
    if (tree.kind === "and") { return { and: children }; }
    if (tree.kind === "or") { return { or: children }; }
    return { not: children.length === 1 ? children[0] : { or: children } };
  }

  function initBuilder(root) {
    var config = JSON.parse(root.getAttribute("data-config"));
    var csrf = root.getAttribute("data-csrf");
    var textarea = document.getElementById("seg-definition");
    var jsonBox = document.getElementById("seg-json-box");
    var text = config.text;
    var types = {};
    config.types.forEach(function (t) { types[t.type] = t; });
    var tree;
    var timer = null;
    var sequence = 0;

    function load() {
      try {
        var parsed = JSON.parse(textarea.value);
        tree = toTree(parsed.rule);
        if (tree.kind === "cond") { tree = { kind: "and", children: [tree] }; }
        return true;
      } catch (e) {
        return false;
      }
    }

    function changed(rebuild) {
      textarea.value = JSON.stringify({ rule: toJson(tree) }, null, 2);
      if (rebuild) { render(); }
      schedulePreview();
    }

    function render() {
      root.textContent = "";
      root.appendChild(renderGroup(tree, null));
    }

    function renderGroup(group, parent) {
      var kind = el("select", { "aria-label": text.and });
      [["and", text.and], ["or", text.or], ["none", text.not]].forEach(function (pair) {
        var option = el("option", { value: pair[0], text: pair[1] });
        if (pair[0] === group.kind) { option.selected = true; }
        kind.appendChild(option);
      });
      kind.addEventListener("change", function () { group.kind = kind.value; changed(false); });
      var addCondition = el("button", { type: "button", className: "secondary", text: text.add_condition });
      addCondition.addEventListener("click", function () {
        group.children.push({ kind: "cond", node: clone(config.types[0].example) });
        changed(true);
      });
      var addGroup = el("button", { type: "button", className: "secondary", text: text.add_group });
      addGroup.addEventListener("click", function () {
        group.children.push({ kind: "or", children: [] });
        changed(true);
      });
      var header = el("div", { className: "seg-head" }, [kind, addCondition, addGroup]);
      if (parent) { header.appendChild(removeButton(parent, group)); }
      var items = el("ul", {}, group.children.map(function (child) {
        return el("li", {}, [child.kind === "cond" ? renderCondition(child, group) : renderGroup(child, group)]);
      }));
      return el("div", { className: "seg-node seg-group" }, [header, items]);
    }

    function removeButton(parent, child) {
      var button = el("button", { type: "button", className: "link", text: text.remove });
      button.addEventListener("click", function () {
        parent.children.splice(parent.children.indexOf(child), 1);
        changed(true);
      });
      return button;
    }

    function renderCondition(item, parent) {
      var node = item.node;
      var select = el("select", { "aria-label": text.add_condition });
      var groups = {};
      config.types.forEach(function (t) {
        if (!groups[t.group]) { groups[t.group] = el("optgroup", { label: t.group }); select.appendChild(groups[t.group]); }
        var option = el("option", { value: t.type, text: t.label });
        if (t.type === node.type) { option.selected = true; }
        groups[t.group].appendChild(option);
      });
      select.addEventListener("change", function () {
        item.node = clone(types[select.value].example);
        changed(true);
      });
      var spec = types[node.type];
      var fields = el("div", { className: "seg-fields" });
      if (spec) {
        Object.keys(spec.schema.properties).forEach(function (key) {
          if (key !== "type") { fields.appendChild(field(item, key, spec)); }
        });
      }
      var head = el("div", { className: "seg-head" }, [select, removeButton(parent, item)]);
      return el("div", { className: "seg-node seg-cond" }, [head, fields]);
    }

    function field(item, key, spec) {
      var node = item.node;
      var schema = spec.schema.properties[key] || {};
      var required = (spec.schema.required || []).indexOf(key) >= 0;
      var optional = !required && key !== "value";  // a value is required unless the op takes none
      var label = el("label", { text: (config.fields[key] || key) + (optional ? " ?" : "") });
      var input;
      function set(value) {
        if (value === undefined || value === "" || (Array.isArray(value) && !value.length)) { delete node[key]; }
        else { node[key] = value; }
        changed(false);
      }
      if (key === "segment_id") {
        input = el("select");
        config.segments.forEach(function (s) {
          var option = el("option", { value: s.id, text: "#" + s.id + " " + s.name });
          if (s.id === node.segment_id) { option.selected = true; }
          input.appendChild(option);
        });
        if (node.segment_id === undefined && config.segments.length) { node.segment_id = config.segments[0].id; }
        input.addEventListener("change", function () { set(Number(input.value)); });
      } else if (key === "within") {
        return windowField(item, label);
      } else if (schema.enum) {
        input = el("select");
        if (!required) { input.appendChild(el("option", { value: "", text: "—" })); }
        schema.enum.forEach(function (value) {
          var option = el("option", { value: value, text: config.values[value] || value });
          if (value === (node[key] === undefined ? schema["default"] : node[key])) { option.selected = true; }
          input.appendChild(option);
        });
        input.addEventListener("change", function () {
          set(input.value === "" ? undefined : input.value);
          if (key === "op") { render(); }
        });
      } else if (schema.type === "boolean") {
        input = el("select");
        [["true", text.yes], ["false", text.no]].forEach(function (pair) {
          var option = el("option", { value: pair[0], text: pair[1] });
          var current = node[key] === undefined ? schema["default"] !== false : node[key];
          if (String(current) === pair[0]) { option.selected = true; }
          input.appendChild(option);
        });
        input.addEventListener("change", function () { set(input.value === "true"); });
      } else if (key === "where") {
        input = el("textarea", { rows: "2", spellcheck: "false", placeholder: '[{"property": "chain", "op": "equals", "value": "…"}]' });
        input.value = node.where && node.where.length ? JSON.stringify(node.where) : "";
        input.addEventListener("input", function () {
          try { set(input.value.trim() ? JSON.parse(input.value) : undefined); input.removeAttribute("aria-invalid"); }
          catch (e) { input.setAttribute("aria-invalid", "true"); }
        });
      } else if (schema.type === "integer" || schema.type === "number") {
        input = el("input", { type: "number" });
        input.value = show(node[key]);
        input.addEventListener("input", function () { set(input.value === "" ? undefined : Number(input.value)); });
      } else if (key === "value") {
        if (node.op === "exists" || node.op === "not_exists") { delete node.value; return el("span"); }
        var many = ["in", "not_in", "between"].indexOf(node.op) >= 0;
        input = el("input", { type: "text", title: many ? text.list_hint : "" });
        input.value = show(node.value);
        input.addEventListener("input", function () {
          set(many ? list(input.value).map(scalar) : scalar(input.value));
        });
      } else if (key === "event" || schema.type === "array") {
        input = el("input", { type: "text", title: text.list_hint });
        input.value = show(node[key]);
        input.addEventListener("input", function () {
          var parts = list(input.value);
          set(key === "event" && parts.length === 1 ? parts[0] : parts);
        });
      } else {
        input = el("input", { type: "text" });
        input.value = show(node[key]);
        input.addEventListener("input", function () { set(input.value.trim() || undefined); });
      }
      if (schema["default"] !== undefined && input.tagName === "INPUT") {
        input.setAttribute("placeholder", show(schema["default"]));
      }
      input.setAttribute("data-field", key);
      label.appendChild(input);
      return label;
    }

    function windowField(item, label) {
      var node = item.node;
      var within = node.within || {};
      if (within.from || within.to) {
        label.appendChild(el("code", { text: JSON.stringify(within) }));
        return label;
      }
      var mode = el("select", { "data-field": "within" });
      [["", text.all_time], ["last", text.last_days]].forEach(function (pair) {
        var option = el("option", { value: pair[0], text: pair[1] });
        if ((within.last_days ? "last" : "") === pair[0]) { option.selected = true; }
        mode.appendChild(option);
      });
      var days = el("input", { type: "number", min: "1", max: "3650" });
      days.value = within.last_days || 90;
      days.hidden = !within.last_days;
      function update() {
        days.hidden = mode.value !== "last";
        if (mode.value === "last") { node.within = { last_days: Number(days.value) || 1 }; }
        else { delete node.within; }
        changed(false);
      }
      mode.addEventListener("change", update);
      days.addEventListener("input", update);
      label.appendChild(el("span", { className: "seg-window" }, [mode, days]));
      return label;
    }

    function schedulePreview() {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(preview, 400);
    }

    function preview() {
      var count = document.getElementById("seg-count");
      var errors = document.getElementById("seg-errors");
      var sample = document.getElementById("seg-sample");
      var notice = document.getElementById("seg-health");
      var definition;
      try { definition = JSON.parse(textarea.value); }
      catch (e) { errors.textContent = text.invalid + " " + e.message; return; }
      var mine = ++sequence;
      count.textContent = text.counting;
      fetch(config.preview_url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify({ definition: definition })
      }).then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; });
      }).then(function (result) {
        if (mine !== sequence) { return; }
        errors.textContent = "";
        if (!result.ok || !result.body.valid) {
          count.textContent = "—";
          errors.appendChild(el("p", { text: text.invalid }));
          errors.appendChild(el("ul", {}, (result.body.errors || []).map(function (p) {
            return el("li", {}, [el("code", { text: p.path || "/" }), document.createTextNode(" " + p.message)]);
          })));
          return;
        }
        count.textContent = result.body.count.toLocaleString() + " " + text.profiles;
        sample.textContent = result.body.sample.length
          ? text.sample + ": " + result.body.sample.map(function (p) { return p.profile_id; }).join(", ")
          : "";
        notice.hidden = !result.body.health_data;
      }).catch(function () {
        if (mine === sequence) { count.textContent = "—"; errors.textContent = text.failed; }
      });
    }

    textarea.addEventListener("input", function () {
      if (load()) { render(); schedulePreview(); }
    });
    if (load()) {
      root.hidden = false;
      jsonBox.open = false;
      render();
    }
    preview();
  }

  function followJobs(section) {
    var url = section.getAttribute("data-status-url");
    var timer = setInterval(function () {
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (body) {
        if (!body.job || (body.job.status !== "queued" && body.job.status !== "running")) {
          clearInterval(timer);
          window.location.reload();
        }
      }).catch(function () { clearInterval(timer); });
    }, 2000);
  }
})();
