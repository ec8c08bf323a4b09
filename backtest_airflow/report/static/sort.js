// Sorts any table.sortable by the clicked column: numbers by value (cells' data-value), text
// alphabetically, empty cells last in both directions; and keeps a leaderboard's pinned columns
// (th.pin: rank, symbol, strategy, the ranking column) in view while it scrolls sideways, each
// `left` the widths of the pinned columns before it. The only script a page may run (CSP hash).
(function () {
  function pin(table) {
    if (!table.offsetWidth) return; // folded away (a closed <details>): pinned when it opens
    var offsets = [], left = 0;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      if (!th.classList.contains("pin")) return;
      offsets.push([col, left]);
      left += th.getBoundingClientRect().width;
    });
    Array.prototype.forEach.call(table.rows, function (row) {
      offsets.forEach(function (o) {
        var cell = row.cells[o[0]];
        if (cell) cell.style.left = o[1] + "px";
      });
    });
  }
  function pinAll() { document.querySelectorAll("table.leaderboard").forEach(pin); }
  pinAll();
  window.addEventListener("resize", pinAll);
  document.addEventListener("toggle", pinAll, true); // a <details> opened: its tables have widths now
  function key(cell) {
    var v = cell.getAttribute("data-value");
    if (v === null || v === "") return null;
    var n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      var button = th.querySelector("button");
      if (!button) return;
      button.addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (x === null || y === null) return (x === null) - (y === null);
          var d = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
          return asc ? d : -d;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
