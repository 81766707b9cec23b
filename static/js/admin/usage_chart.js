// The usage page's chart: tokens per day, one line per model (uPlot, loaded before this script).
(function () {
  "use strict";
  const holder = document.getElementById("usage-chart");
  const source = document.getElementById("usage-chart-data");
  if (!holder || !source || typeof uPlot === "undefined") return;
  const data = JSON.parse(source.textContent);
  if (!data.days.length) return;
  const days = data.days.map((day) => Date.parse(`${day}T12:00:00Z`) / 1000);
  const palette = ["#417690", "#e08e0b", "#5b9a68", "#b0413e", "#7a5195", "#3d8ab8", "#a0a0a0"];
  const series = [{}].concat(data.series.map((s, i) => ({
    label: s.label, stroke: palette[i % palette.length], width: 2, points: { show: true },
  })));
  const width = Math.max(320, holder.clientWidth || 800);
  new uPlot(
    { width, height: 320, series, axes: [{}, { label: "tokens", size: 70 }], scales: { x: { time: true } } },
    [days].concat(data.series.map((s) => s.values)),
    holder,
  );
})();
