// Draws the economics charts (Chart.js, vendored) from the JSON the page carries; no inline script.
(function () {
  "use strict";
  function draw() {
    var holder = document.getElementById("chart-data");
    if (!holder || typeof Chart === "undefined") { return; }
    var charts = JSON.parse(holder.textContent || "{}");
    var rtl = document.documentElement.dir === "rtl";
    var palette = ["#2456c9", "#17803d", "#a15c00", "#7a3fb0", "#b42318", "#0e7490"];
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var spec = charts[canvas.dataset.chart];
      if (!spec) { return; }
      new Chart(canvas, {
        type: spec.type,
        data: {
          labels: spec.labels,
          datasets: spec.series.map(function (s, i) {
            return { label: s.label, data: s.data, backgroundColor: palette[i % palette.length], borderColor: palette[i % palette.length] };
          })
        },
        options: {
          animation: false, responsive: true, maintainAspectRatio: false,
          locale: document.documentElement.lang,
          plugins: { legend: { rtl: rtl, display: spec.series.length > 1 } },
          scales: { x: { reverse: rtl }, y: { beginAtZero: true } }
        }
      });
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); } else { draw(); }
})();
