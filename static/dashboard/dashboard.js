// Draws every <canvas data-chart=… data-source=…> from the JSON block it names, and makes the
// project switcher navigate on change. Loaded as a file: the CSP forbids inline scripts.
(function () {
  "use strict";
  var palette = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#ca8a04",
    "#db2777", "#4b5563", "#65a30d"];

  function draw(canvas) {
    var source = document.getElementById(canvas.dataset.source);
    if (!source || typeof Chart === "undefined") return;
    var data = JSON.parse(source.textContent);
    var kind = canvas.dataset.chart;
    var type = kind === "stacked" ? "bar" : kind;
    data.datasets.forEach(function (ds, i) {
      var colour = palette[i % palette.length];
      ds.borderColor = kind === "doughnut" ? "#fff" : colour;
      ds.backgroundColor = kind === "doughnut" ? palette : colour;
      ds.pointRadius = 0;
      ds.borderWidth = kind === "line" ? 2 : 1;
    });
    var options = { animation: false, responsive: true, maintainAspectRatio: false };
    if (kind === "stacked") {
      options.scales = { x: { stacked: true }, y: { stacked: true, beginAtZero: true } };
    } else if (kind !== "doughnut") {
      options.scales = { y: { beginAtZero: true } };
    }
    new Chart(canvas, { type: type, data: { labels: data.labels, datasets: data.datasets },
      options: options });
  }

  document.querySelectorAll("canvas[data-chart]").forEach(draw);
  var switcher = document.querySelector("[data-switcher] select");
  if (switcher) {
    switcher.addEventListener("change", function () { window.location.href = switcher.value; });
  }
})();
