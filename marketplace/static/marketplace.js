// 402claw marketplace: progressive enhancement only. The pages are complete
// without JavaScript; this refreshes the leaderboard and hero figures from
// the public analytics route and adds copy buttons. It builds rows with DOM
// methods and textContent, never HTML strings, so API names cannot inject
// markup.
(function () {
  "use strict";

  function text(tag, value, cls) {
    var el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  }

  function percent(x) {
    return (Math.round(x * 1000) / 10).toString() + "%";
  }

  function renderRows(tbody, rows) {
    var fresh = document.createDocumentFragment();
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-api", r.apiId);
      tr.appendChild(text("td", String(r.rank), "num"));
      var name = document.createElement("td");
      var a = document.createElement("a");
      a.href = "/apis/" + encodeURIComponent(r.apiId);
      a.textContent = r.apiId;
      name.appendChild(a);
      tr.appendChild(name);
      tr.appendChild(text("td", r.directory, "hide-sm"));
      tr.appendChild(text("td", String(r.calls), "num"));
      tr.appendChild(text("td", String(r.uniqueCallers), "num hide-sm"));
      tr.appendChild(text("td", "$" + r.revenueUsd, "num"));
      tr.appendChild(text("td", percent(r.errorRate), "num hide-sm"));
      tr.appendChild(text("td", String(r.p95LatencyMs) + " ms", "num hide-sm"));
      tr.appendChild(text("td", String(r.score), "num"));
      fresh.appendChild(tr);
    });
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    tbody.appendChild(fresh);
  }

  function refresh(board) {
    var url = board.getAttribute("data-analytics") +
      "?window=" + encodeURIComponent(board.getAttribute("data-window")) +
      "&top=" + encodeURIComponent(board.getAttribute("data-top"));
    return fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (res) {
        if (!res.ok) throw new Error("analytics answered " + res.status);
        return res.json();
      })
      .then(function (data) {
        var tbody = board.querySelector("tbody");
        var rows = Array.isArray(data.topApis) ? data.topApis : [];
        var empty = document.getElementById("board-empty");
        if (tbody) renderRows(tbody, rows);
        if (empty) empty.hidden = rows.length > 0;
        board.hidden = rows.length === 0;
        var hero = data.hero || {};
        document.querySelectorAll("[data-hero]").forEach(function (el) {
          var k = el.getAttribute("data-hero");
          if (hero[k] === undefined) return;
          el.textContent = k === "revenueUsd" ? "$" + hero[k] : String(hero[k]);
        });
        board.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {
        // Keep the server-rendered figures; try again next time.
        board.setAttribute("data-refresh-failed", String(Date.now()));
      });
  }

  function addCopyButtons() {
    if (!navigator.clipboard) return;
    document.querySelectorAll(".cmd").forEach(function (box) {
      var pre = box.querySelector("pre");
      if (!pre) return;
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = "Copy";
      b.addEventListener("click", function () {
        navigator.clipboard.writeText(pre.textContent).then(function () {
          b.textContent = "Copied";
          setTimeout(function () { b.textContent = "Copy"; }, 1500);
        }, function () { b.textContent = "Select and copy"; });
      });
      box.appendChild(b);
    });
  }

  function start() {
    addCopyButtons();
    var board = document.getElementById("leaderboard");
    if (!board) return;
    var every = parseInt(board.getAttribute("data-refresh"), 10);
    if (!(every > 0)) return;
    setInterval(function () {
      if (document.visibilityState === "hidden") return;
      refresh(board);
    }, every * 1000);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
