// The generations table: filter and paginate the rows of the JSON data island.
// Record text only ever reaches the page through textContent.
(function () {
  "use strict";
  var island = document.getElementById("llmlab-data");
  if (!island) {
    return;
  }
  var data = JSON.parse(island.textContent);
  var col = {};
  data.cols.forEach(function (name, i) { col[name] = i; });
  var keys = data.keys, texts = data.texts, rows = data.rows, details = data.details;
  var pageSize = data.page_size;
  var OUTCOMES = { passed: 1, failed: 1, error: 1, skipped: 1, xfailed: 1, xpassed: 1 };
  var NCOLS = 10;
  var lowered = [];
  var matches = [];
  var page = 0;

  function byId(id) { return document.getElementById(id); }
  var ui = {
    filter: byId("llm-filter"), outcome: byId("llm-outcome"), model: byId("llm-model"),
    body: byId("llm-rows"), count: byId("llm-count"), page: byId("llm-page"),
    first: byId("llm-first"), prev: byId("llm-prev"), next: byId("llm-next"), last: byId("llm-last")
  };

  function low(k) {
    var v = lowered[k];
    if (v === undefined) {
      v = keys[k].toLowerCase();
      lowered[k] = v;
    }
    return v;
  }

  function num(v) {
    if (v === null || v === undefined) {
      return "\u2013";
    }
    if (Math.abs(v) >= 1000) {
      return Math.round(v).toLocaleString("en-US");
    }
    return String(Number(v.toPrecision(3)));
  }

  function count(n) {
    return n.toLocaleString("en-US");
  }

  function distinct(column) {
    var seen = {}, out = [];
    for (var i = 0; i < rows.length; i++) {
      var k = rows[i][column];
      if (!seen[k]) {
        seen[k] = true;
        out.push(k);
      }
    }
    return out;
  }

  function fillSelect(select, values) {
    values.forEach(function (k) {
      var option = document.createElement("option");
      option.value = String(k);
      option.textContent = keys[k];
      select.appendChild(option);
    });
  }

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) {
      td.className = cls;
    }
    tr.appendChild(td);
    return td;
  }

  function fillDetail(td, row) {
    var d = row[col.detail];
    if (d < 0) {
      var p = document.createElement("p");
      p.className = "note";
      p.textContent = "The texts of this generation are not embedded in the page (size limit); " +
        "see record " + row[col.n] + " of results.jsonl.";
      td.appendChild(p);
      return;
    }
    var entry = details[d], shown = 0;
    for (var k = 0; k < entry.length; k++) {
      if (entry[k] < 0) {
        continue;
      }
      var h = document.createElement("h4");
      h.textContent = data.detail_labels[k];
      var pre = document.createElement("pre");
      pre.textContent = texts[entry[k]];
      td.appendChild(h);
      td.appendChild(pre);
      shown++;
    }
    if (!shown) {
      td.textContent = "No texts recorded.";
    }
  }

  function appendRow(fragment, i) {
    var row = rows[i];
    var tr = document.createElement("tr");
    var first = document.createElement("td");
    var button = document.createElement("button");
    button.type = "button";
    button.className = "toggle";
    button.setAttribute("aria-expanded", "false");
    button.textContent = keys[row[col.test]];
    first.appendChild(button);
    tr.appendChild(first);
    cell(tr, keys[row[col.model]], "model");
    cell(tr, num(row[col.temp]), "n");
    cell(tr, row[col.run] === null ? "" : String(row[col.run]), "n");
    var outcome = keys[row[col.outcome]];
    cell(tr, outcome, "o-" + (OUTCOMES.hasOwnProperty(outcome) ? outcome : "other"));
    cell(tr, num(row[col.wh1k]), "n");
    cell(tr, keys[row[col.prov]], "");
    cell(tr, num(row[col.ttft]), "n");
    cell(tr, num(row[col.dtps]), "n");
    cell(tr, num(row[col.ptok]) + " / " + num(row[col.ctok]), "n");
    var detail = document.createElement("tr");
    detail.className = "detail";
    detail.hidden = true;
    var td = document.createElement("td");
    td.colSpan = NCOLS;
    detail.appendChild(td);
    fillDetail(td, row);
    button.addEventListener("click", function () {
      detail.hidden = !detail.hidden;
      button.setAttribute("aria-expanded", detail.hidden ? "false" : "true");
    });
    fragment.appendChild(tr);
    fragment.appendChild(detail);
  }

  function render() {
    var pages = Math.max(1, Math.ceil(matches.length / pageSize));
    page = Math.min(Math.max(page, 0), pages - 1);
    var start = page * pageSize, end = Math.min(start + pageSize, matches.length);
    var fragment = document.createDocumentFragment();
    for (var j = start; j < end; j++) {
      appendRow(fragment, matches[j]);
    }
    ui.body.replaceChildren(fragment);
    var text = matches.length ? "Rows " + count(start + 1) + "\u2013" + count(end) + " of " +
      count(matches.length) : "No matching rows";
    if (matches.length !== rows.length) {
      text += " (filtered from " + count(rows.length) + ")";
    }
    ui.count.textContent = text;
    ui.page.textContent = "Page " + count(page + 1) + " of " + count(pages);
    ui.first.disabled = ui.prev.disabled = page === 0;
    ui.next.disabled = ui.last.disabled = page >= pages - 1;
  }

  function filter() {
    var terms = ui.filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    var outcome = ui.outcome.value, model = ui.model.value;
    matches = [];
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      if (outcome !== "" && String(row[col.outcome]) !== outcome) {
        continue;
      }
      if (model !== "" && String(row[col.model]) !== model) {
        continue;
      }
      if (terms.length) {
        var hay = low(row[col.test]) + "\n" + low(row[col.model]) + "\n" + low(row[col.outcome]);
        var all = true;
        for (var t = 0; t < terms.length && all; t++) {
          all = hay.indexOf(terms[t]) >= 0;
        }
        if (!all) {
          continue;
        }
      }
      matches.push(i);
    }
    page = 0;
    render();
  }

  var timer = null;
  ui.filter.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(filter, 150);
  });
  ui.outcome.addEventListener("change", filter);
  ui.model.addEventListener("change", filter);
  ui.first.addEventListener("click", function () { page = 0; render(); });
  ui.prev.addEventListener("click", function () { page -= 1; render(); });
  ui.next.addEventListener("click", function () { page += 1; render(); });
  ui.last.addEventListener("click", function () { page = Infinity; render(); });
  fillSelect(ui.outcome, distinct(col.outcome));
  fillSelect(ui.model, distinct(col.model));
  filter();
})();
