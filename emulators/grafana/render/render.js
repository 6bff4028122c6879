// Draws every timeseries panel of a Grafana dashboard JSON with chart.js, querying Prometheus'
// HTTP API. Query string: ?prom=http://127.0.0.1:9090&dashboard=onsale.json&minutes=15
"use strict";
const params = new URLSearchParams(location.search);
const prom = params.get("prom") || "http://127.0.0.1:9090";
const minutes = Number(params.get("minutes") || 15);
const dashboardUrl = params.get("dashboard") || "onsale.json";
const palette = ["#ff4fb0", "#4fd1ff", "#ffd84f", "#7dff7a", "#b48cff", "#ff8f4f", "#4fffd5", "#ff4f4f"];

function legend(format, metric) {
  if (!format) return JSON.stringify(metric);
  return format.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, k) => metric[k] ?? "");
}

async function queryRange(expr, step) {
  const end = Date.now() / 1000;
  const start = end - minutes * 60;
  const q = expr.replaceAll("$__rate_interval", "1m");
  const url = `${prom}/api/v1/query_range?query=${encodeURIComponent(q)}&start=${start}&end=${end}&step=${step}`;
  const res = await fetch(url);
  const body = await res.json();
  if (body.status !== "success") throw new Error(body.error || res.statusText);
  return body.data.result;
}

async function drawPanel(panel, el) {
  const step = Math.max(5, Math.round((minutes * 60) / 120));
  const datasets = [];
  for (const target of panel.targets || []) {
    for (const series of await queryRange(target.expr, step)) {
      datasets.push({
        label: legend(target.legendFormat, series.metric),
        data: series.values.map(([t, v]) => ({ x: t * 1000, y: Number(v) })),
        borderColor: palette[datasets.length % palette.length],
        pointRadius: 0, borderWidth: 1.5, tension: 0.2,
      });
    }
  }
  const canvas = document.createElement("canvas");
  el.appendChild(canvas);
  new Chart(canvas, {
    type: "line",
    data: { datasets },
    options: {
      animation: false, maintainAspectRatio: false, parsing: false,
      scales: {
        x: { type: "linear", ticks: { color: "#aaa", maxTicksLimit: 6,
             callback: (v) => new Date(v).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) } },
        y: { ticks: { color: "#aaa" }, beginAtZero: true },
      },
      plugins: { legend: { labels: { color: "#ddd", boxWidth: 10, font: { size: 10 } } } },
    },
  });
}

async function main() {
  const dash = await (await fetch(dashboardUrl)).json();
  document.getElementById("title").textContent = dash.title;
  document.getElementById("status").textContent = `last ${minutes} min · ${prom}`;
  const grid = document.getElementById("grid");
  const jobs = [];
  for (const panel of dash.panels) {
    const g = panel.gridPos;
    const el = document.createElement("section");
    el.style.gridColumn = `${g.x + 1} / span ${g.w}`;
    el.style.gridRow = `${g.y + 1} / span ${g.h}`;
    if (panel.type === "row") {
      el.className = "row";
      el.textContent = panel.title;
    } else {
      el.className = "panel";
      el.innerHTML = `<h2></h2><div class="box"></div>`;
      el.querySelector("h2").textContent = panel.title;
      jobs.push(drawPanel(panel, el.querySelector(".box")).catch((e) => {
        el.querySelector(".box").innerHTML = `<p class="err"></p>`;
        el.querySelector(".err").textContent = String(e);
      }));
    }
    grid.appendChild(el);
  }
  await Promise.all(jobs);
  document.body.dataset.rendered = "true";
}
main();
