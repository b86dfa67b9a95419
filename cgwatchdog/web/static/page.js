// cgwatchdog status page: a little on top of a page that works without it.
// Filters the table's rows as one types, and refreshes the live parts in place
// (keeping the filter) instead of reloading the whole page.
(function () {
  "use strict";

  function applyFilter() {
    var box = document.getElementById("filter");
    var rows = document.querySelectorAll("#miner-rows tr[data-search]");
    if (!box || !rows.length) return;
    var words = box.value.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    rows.forEach(function (row) {
      var text = row.getAttribute("data-search") || "";
      var match = words.every(function (w) { return text.indexOf(w) !== -1; });
      row.classList.toggle("hidden", !match);
      if (match) shown += 1;
    });
    var matched = document.getElementById("matched");
    if (matched) matched.setAttribute("data-shown", String(shown));
  }

  function refresh() {
    if (document.hidden) return;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (answer) { return answer.ok ? answer.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (old) {
          var replacement = fresh.getElementById(old.id);
          if (replacement) old.replaceWith(document.importNode(replacement, true));
        });
        applyFilter();
      })
      .catch(function () { /* the next refresh tries again */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("filter");
    if (box) box.addEventListener("input", applyFilter);
    applyFilter();
    var seconds = parseInt(document.body.getAttribute("data-refresh"), 10);
    if (seconds > 0) window.setInterval(refresh, seconds * 1000);
  });
})();
