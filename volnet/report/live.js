// volnet live view: draws the run's curves as SVG from the embedded data and, on the live page, from
// /data.json every second. No libraries, no network beyond the page's own server.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var box = document.getElementById("live");
  var isLive = box.getAttribute("data-live") === "true";
  if (!isLive) { box.style.display = "none"; return; }
  var status = document.getElementById("live-status");
  var target = document.getElementById("live-curves");

  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (parent) { parent.appendChild(e); }
    return e;
  }

  function chart(title, series, yfmt) {
    var W = 520, H = 300, L = 55, R = 10, T = 22, B = 35;
    var svg = el("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img"});
    el("text", {x: L, y: 14}, svg).textContent = title;
    var xs = [], ys = [];
    series.forEach(function (s) { s.pts.forEach(function (p) { xs.push(p[0]); ys.push(p[1]); }); });
    if (!xs.length) { el("text", {x: L, y: H / 2}, svg).textContent = "waiting for the first steps"; return svg; }
    var x0 = 0, x1 = Math.max(1, Math.ceil(Math.max.apply(null, xs)));
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (y1 - y0 < 1e-9) { y1 = y0 + 1; }
    function sx(v) { return L + (v - x0) / (x1 - x0) * (W - L - R); }
    function sy(v) { return H - B - (v - y0) / (y1 - y0) * (H - T - B); }
    el("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999"}, svg);
    el("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#999"}, svg);
    var step = Math.max(1, Math.ceil((x1 - x0) / 10));
    for (var e = x0; e <= x1; e += step) {
      el("text", {x: sx(e) - 3, y: H - B + 14}, svg).textContent = String(e);
    }
    el("text", {x: W / 2 - 15, y: H - 4}, svg).textContent = "epoch";
    for (var i = 0; i <= 4; i++) {
      var v = y0 + (y1 - y0) * i / 4;
      el("text", {x: 2, y: sy(v) + 4}, svg).textContent = yfmt(v);
    }
    series.forEach(function (s, k) {
      if (!s.pts.length) { return; }
      var d = s.pts.map(function (p, j) { return (j ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1); });
      el("path", {d: d.join(" "), fill: "none", stroke: s.color, "stroke-width": s.dots ? 1.5 : 1,
                  opacity: s.dots ? 1 : 0.45}, svg);
      if (s.dots) {
        s.pts.forEach(function (p) {
          el("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 3.5, fill: s.color, "class": "point"}, svg);
        });
      }
      el("text", {x: W - R - 140, y: T + 12 + 13 * k, style: "fill: " + s.color}, svg).textContent = s.name;
    });
    return svg;
  }

  function draw(data) {
    var h = data.history || [], st = (data.steps || []).filter(function (r) { return r.loss !== null; });
    function ser(key, scale) {
      return h.filter(function (r) { return r[key] !== null && r[key] !== undefined; })
              .map(function (r) { return [r.epoch, scale * r[key]]; });
    }
    var loss = chart("softmax loss", [
      {name: "train (per step)", color: "#1f77b4", pts: st.map(function (r) { return [r.epoch, r.loss]; })},
      {name: "train (epoch)", color: "#1f77b4", dots: true, pts: ser("train_loss", 1)},
      {name: "validation", color: "#ff7f0e", dots: true, pts: ser("val_loss", 1)}],
      function (v) { return v.toFixed(2); });
    var acc = chart("accuracy (%)", [
      {name: "train", color: "#1f77b4", dots: true, pts: ser("train_acc", 100)},
      {name: "validation", color: "#ff7f0e", dots: true, pts: ser("val_acc", 100)}],
      function (v) { return v.toFixed(1); });
    target.textContent = "";
    target.appendChild(loss);
    target.appendChild(acc);
    var last = st.length ? st[st.length - 1] : null;
    status.textContent = (data.done ? "training finished" : "training") + ": " + h.length + " epochs, " +
      st.length + " step records" + (last ? ", step " + last.step + ", lr " + last.lr.toPrecision(3) +
      ", loss " + last.loss.toFixed(4) : "");
    target.setAttribute("data-points", String(document.querySelectorAll("#live-curves .point").length));
    target.setAttribute("data-steps", String(st.length));
  }

  draw(JSON.parse(document.getElementById("run-data").textContent));
  function poll() {
    fetch("data.json", {cache: "no-store"}).then(function (r) { return r.json(); }).then(function (d) {
      draw(d);
      if (!d.done) { setTimeout(poll, 1000); }
    }).catch(function () { status.textContent = "the training server has stopped; this page shows its last data"; });
  }
  setTimeout(poll, 1000);
})();
