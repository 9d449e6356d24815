// The client-side attention view of perceiver-edu: one plain ES module, no framework, no bundler.
//
// It draws a resampler's attention on a <canvas> from tensors sent once as binary data, and
// answers every view change (layer, head, latent, tab, scene, hover) in the browser, with no kernel.
// The same module runs in two hosts (perceiver_edu/explorer/view.py):
//   - anywidget (JupyterLab, Notebook 7, Voila, VS Code, Colab): `export default { render }`;
//     the kernel sends new tensors after an architecture change;
//   - a static HTML output (the book, nbviewer, an .html export): view.py inlines this file and
//     calls render() with a small stand-in for anywidget's model, holding the embedded data.
//
// The model's fields:
//   meta    {name, depth, heads, latents, s, n, cls, grid, kv, scenes: [{label, h, w, channels,
//            boxes: [[y0, x0, y1, x1]], labels: [k]}], cmap: base64 of 256 x RGB (viridis)}
//   attn    float32 [scenes, depth, h, l, n], little-endian (base64 text, or a DataView from anywidget)
//   pixels  uint8: every scene's image, row by row, one after the other (h x w x channels each)
//   scene, layer, head, latent (ints) and tab (a string): what is shown; the view writes them back
// Letters: s context length, l latents, h heads, n keys (= s + l, or s without latents in the keys).
// The root element carries data-pe-view (the view's name), data-pe-drawn (completed draws, for
// browser tests and benchmarks) and tabindex (arrow keys step layer and head); the readout carries
// data-pe-readout.

const TABS = [
  ["head", "chosen head"],
  ["heads", "heads of the layer"],
  ["grid", "layers × heads"],
  ["share", "context vs latents"],
  ["entropy", "entropy"],
  ["image", "on the image"],
];
const FONT = "12px sans-serif";

// -- data: base64 or binary buffers to typed arrays ------------------------------------------------

function bytes(x) {
  if (typeof x === "string") {
    const text = atob(x);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }
  if (x instanceof DataView) return new Uint8Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength));
  if (x instanceof ArrayBuffer) return new Uint8Array(x.slice(0));
  return new Uint8Array(0);
}

// Everything drawn is computed once per new tensor: offsets, each layer's largest weight (the shared
// colour scale of its heads), context shares and entropies.
function load(model) {
  const meta = model.get("meta");
  const attn = new Float32Array(bytes(model.get("attn")).buffer); // a fresh copy: 4-byte aligned
  const pixels = bytes(model.get("pixels"));
  const { depth: D, heads: H, latents: L, n: N, s: S } = meta;
  const scenes = meta.scenes.length;
  const row = (sc, layer, head, i) => (((sc * D + layer) * H + head) * L + i) * N; // start of a row
  const vmax = [], share = [], entropy = [];
  for (let sc = 0; sc < scenes; sc++) {
    vmax.push([]);
    for (let layer = 0; layer < D; layer++) {
      let m = 0;
      for (let head = 0; head < H; head++) {
        for (let i = 0; i < L; i++) {
          const o = row(sc, layer, head, i);
          let sum = 0, ent = 0;
          for (let j = 0; j < N; j++) {
            const p = attn[o + j];
            if (p > m) m = p;
            if (j < S) sum += p;
            if (p > 0) ent -= p * Math.log(p); // nats; 0 log 0 = 0
          }
          share.push(sum);
          entropy.push(ent);
        }
      }
      vmax[sc].push(m || 1);
    }
  }
  const offsets = [];
  let at = 0;
  for (const sc of meta.scenes) { offsets.push(at); at += sc.h * sc.w * sc.channels; }
  const cmap = bytes(meta.cmap); // 256 x RGB
  const stat = (arr, sc, layer, head, i) => arr[((sc * D + layer) * H + head) * L + i];
  return { meta, attn, pixels, offsets, row, vmax, cmap, D, H, L, N, S,
    share: (...a) => stat(share, ...a), entropy: (...a) => stat(entropy, ...a) };
}

// -- small drawing helpers --------------------------------------------------------------------

function colour(d, t) {
  const k = 3 * Math.max(0, Math.min(255, Math.round(t * 255)));
  return [d.cmap[k], d.cmap[k + 1], d.cmap[k + 2]];
}
const css = (c, a = 1) => `rgba(${c[0]},${c[1]},${c[2]},${a})`;

function text(ctx, s, x, y, align = "left", colour = "#222") {
  ctx.fillStyle = colour;
  ctx.textAlign = align;
  ctx.fillText(s, x, y);
}

// A colour bar with its unit, from 0 to vmax: every panel says its scale.
function colourBar(ctx, d, x, y, w, vmax, label) {
  for (let k = 0; k < w; k++) {
    ctx.fillStyle = css(colour(d, k / (w - 1)));
    ctx.fillRect(x + k, y, 1, 10);
  }
  ctx.strokeStyle = "#555";
  ctx.strokeRect(x + 0.5, y + 0.5, w - 1, 10);
  const digits = vmax < 0.1 ? 3 : 2;
  text(ctx, "0", x, y + 23, "left");
  text(ctx, vmax.toFixed(digits), x + w, y + 23, "right");
  text(ctx, label, x + w + 8, y + 10, "left");
}

// One head's map [l x n] into a box: the context keys across `wc` pixels, then after a gap the
// latents' keys across `wl` (zoomed: l columns get as much room as many context columns).
// Drawn as an image of n x l pixels, scaled without smoothing, so a large map costs one blit.
const GAP = 10;
function drawMap(ctx, d, sc, layer, head, box, vmax) {
  const { L, N, S } = d;
  const image = new ImageData(N, L);
  for (let i = 0; i < L; i++) {
    const o = d.row(sc, layer, head, i);
    for (let j = 0; j < N; j++) {
      const c = colour(d, d.attn[o + j] / vmax), k = 4 * (i * N + j);
      image.data[k] = c[0]; image.data[k + 1] = c[1]; image.data[k + 2] = c[2]; image.data[k + 3] = 255;
    }
  }
  const off = document.createElement("canvas");
  off.width = N; off.height = L;
  off.getContext("2d").putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, S, L, box.x, box.y, box.wc, box.h);
  if (N > S) ctx.drawImage(off, S, 0, N - S, L, box.x + box.wc + GAP, box.y, box.wl, box.h);
}

// Which cell of a map box is under (mx, my): {i: latent, j: key}, or null.
function hitMap(d, box, mx, my) {
  if (my < box.y || my >= box.y + box.h) return null;
  const i = Math.floor(((my - box.y) / box.h) * d.L);
  if (mx >= box.x && mx < box.x + box.wc) return { i, j: Math.floor(((mx - box.x) / box.wc) * d.S) };
  const x2 = box.x + box.wc + GAP;
  if (d.N > d.S && mx >= x2 && mx < x2 + box.wl) return { i, j: d.S + Math.floor(((mx - x2) / box.wl) * (d.N - d.S)) };
  return null;
}

function cellRect(d, box, i, j) {
  const y = box.y + (i * box.h) / d.L, h = box.h / d.L;
  if (j < d.S) return [box.x + (j * box.wc) / d.S, y, box.wc / d.S, h];
  return [box.x + box.wc + GAP + ((j - d.S) * box.wl) / (d.N - d.S), y, box.wl / (d.N - d.S), h];
}

// A key in words: context token j (its patch's row and column when it has one) or a latent's key.
function keyText(d, j) {
  const { cls, grid } = d.meta;
  if (j >= d.S) return `latent ${j - d.S}'s key`;
  if (j < cls) return `context token ${j} (the CLS token, no place on the image)`;
  const p = j - cls;
  return `context token ${j} (patch row ${Math.floor(p / grid)}, column ${p % grid})`;
}

// The scene's picture with the attention of one latent over its patches (CLS left out), in a
// square of `size` pixels; the overlay's colour scale runs from 0 to `vmax`.
function drawImage(ctx, d, sc, size, x0, y0, weights, vmax) {
  const m = d.meta.scenes[sc], { grid, cls } = d.meta;
  const im = new ImageData(m.w, m.h), src = d.pixels, o = d.offsets[sc];
  for (let p = 0; p < m.w * m.h; p++) {
    for (let c = 0; c < 3; c++) im.data[4 * p + c] = src[o + p * m.channels + (m.channels === 3 ? c : 0)];
    im.data[4 * p + 3] = 255;
  }
  const off = document.createElement("canvas");
  off.width = m.w; off.height = m.h;
  off.getContext("2d").putImageData(im, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(off, x0, y0, size, size);
  if (weights) {
    const cell = size / grid;
    for (let p = 0; p < grid * grid; p++) {
      const w = weights[cls + p] / vmax;
      ctx.fillStyle = css(colour(d, w), 0.15 + 0.6 * Math.min(1, w)); // the brighter, the more opaque
      ctx.fillRect(x0 + (p % grid) * cell, y0 + Math.floor(p / grid) * cell, cell, cell);
    }
  }
  ctx.setLineDash([4, 3]);
  ctx.strokeStyle = "#ff5ac8"; // the digits' boxes, dashed, with their class
  const scale = size / m.w;
  (m.boxes || []).forEach(([y0b, x0b, y1b, x1b], k) => {
    ctx.strokeRect(x0 + x0b * scale, y0 + y0b * scale, (x1b - x0b) * scale, (y1b - y0b) * scale);
    text(ctx, String(m.labels[k]), x0 + x0b * scale + 2, y0 + y0b * scale + 12, "left", "#ff5ac8");
  });
  ctx.setLineDash([]);
}

const rowOf = (d, sc, layer, head, i) => d.attn.subarray(d.row(sc, layer, head, i), d.row(sc, layer, head, i) + d.N);
function patchMax(d, weights) {
  let m = 0;
  for (let p = d.meta.cls; p < d.S; p++) m = Math.max(m, weights[p]);
  return m || 1;
}
// The latents that give patch-token j the most weight, in the chosen layer and head.
function readersOf(d, sc, layer, head, j, k = 3) {
  const all = [];
  for (let i = 0; i < d.L; i++) all.push([i, d.attn[d.row(sc, layer, head, i) + j]]);
  return all.sort((a, b) => b[1] - a[1]).slice(0, k);
}
function patchAt(d, x0, y0, size, mx, my) {
  const g = d.meta.grid;
  if (mx < x0 || my < y0 || mx >= x0 + size || my >= y0 + size) return null;
  return d.meta.cls + Math.floor(((my - y0) / size) * g) * g + Math.floor(((mx - x0) / size) * g);
}

// -- the views: each draws the canvas and returns the regions a pointer can hover ---------------

const W = 940; // the canvas' width in CSS pixels

function headGeometry(d, wc, hMax) {
  const h = Math.max(d.L * 2, Math.min(hMax, d.L * 22));
  const wl = d.N > d.S ? Math.max(d.L * 3, Math.min(180, (d.N - d.S) * 16)) : 0;
  return { wc, wl, h };
}

function viewHead(ctx, d, st, hover) {
  const { scene: sc, layer, head } = st;
  const g = headGeometry(d, 480, 300);
  const box = { x: 60, y: 30, ...g };
  const vmax = d.vmax[sc][layer];
  text(ctx, `layer ${layer}, head ${head}: ${d.L} latents (rows) over ${d.N} keys (columns), s = ${d.S}`, 10, 16);
  drawMap(ctx, d, sc, layer, head, box, vmax);
  text(ctx, "context tokens 0…" + (d.S - 1), box.x + box.wc / 2, box.y + box.h + 16, "center");
  if (d.N > d.S) text(ctx, "latents' keys (zoomed)", box.x + box.wc + GAP + box.wl / 2, box.y + box.h + 16, "center");
  ctx.save(); ctx.translate(16, box.y + box.h / 2); ctx.rotate(-Math.PI / 2);
  text(ctx, "latent (query)", 0, 0, "center"); ctx.restore();
  for (let i = 0; i < d.L; i += Math.ceil(d.L / 16)) text(ctx, String(i), box.x - 4, box.y + ((i + 0.7) * box.h) / d.L, "right");
  colourBar(ctx, d, box.x, box.y + box.h + 26, 240, vmax, "weight (shared by the layer's heads)");
  // the image beside the map: the hovered (or chosen) latent's row over the patches
  const size = 240, ix = W - size - 10, iy = 30;
  const i = hover && hover.i !== undefined ? hover.i : st.latent;
  const weights = rowOf(d, sc, layer, head, i);
  if (d.meta.grid) {
    const pmax = patchMax(d, weights);
    drawImage(ctx, d, sc, size, ix, iy, weights, pmax);
    text(ctx, `latent ${i} over the image (0 to ${pmax.toFixed(3)})`, ix + size / 2, iy + size + 16, "center");
  }
  // mark what is hovered: the cell, or the patch's column with its top readers
  ctx.lineWidth = 2;
  if (hover && hover.j !== undefined) {
    ctx.strokeStyle = "#fff";
    if (hover.fromImage) {
      const [x, , w] = cellRect(d, box, 0, hover.j);
      ctx.strokeRect(x - 1, box.y - 1, w + 2, box.h + 2);
      for (const [r] of hover.readers) text(ctx, "▶", box.x - 18, box.y + ((r + 0.8) * box.h) / d.L, "left", "#d62728");
    } else {
      const [x, y, w, h] = cellRect(d, box, hover.i, hover.j);
      ctx.strokeRect(x - 1, y - 1, w + 2, h + 2);
    }
  }
  ctx.lineWidth = 1;
  return { height: box.y + box.h + 60, hit: (mx, my) => {
    const c = hitMap(d, box, mx, my);
    if (c) return { ...c, layer, head };
    if (!d.meta.grid) return null;
    const j = patchAt(d, ix, iy, size, mx, my);
    return j === null ? null : { j, layer, head, fromImage: true, readers: readersOf(d, sc, layer, head, j) };
  } };
}

function viewHeads(ctx, d, st) {
  const { scene: sc, layer } = st, cols = d.H > 1 ? 2 : 1;
  const g = headGeometry(d, cols === 2 ? 300 : 600, 130);
  const bw = g.wc + GAP + g.wl + 70, bh = g.h + 30, vmax = d.vmax[sc][layer], boxes = [];
  text(ctx, `layer ${layer}: every head, one colour scale (click a head to open it)`, 10, 16);
  for (let head = 0; head < d.H; head++) {
    const box = { x: 40 + (head % cols) * bw, y: 44 + Math.floor(head / cols) * bh, ...g, head };
    text(ctx, `head ${head}`, box.x, box.y - 4, "left", head === st.head ? "#d62728" : "#222");
    drawMap(ctx, d, sc, layer, head, box, vmax);
    boxes.push(box);
  }
  const y = 44 + Math.ceil(d.H / cols) * bh;
  colourBar(ctx, d, 40, y, 240, vmax, "weight (all heads of the layer)");
  return { height: y + 40, hit: (mx, my) => {
    for (const box of boxes) {
      const c = hitMap(d, box, mx, my);
      if (c) return { ...c, layer, head: box.head, open: { head: box.head, tab: "head" } };
    }
    return null;
  } };
}

function viewGrid(ctx, d, st) {
  const sc = st.scene, cw = Math.min(160, Math.floor((W - 80) / d.H) - 8);
  const g = { wc: Math.round(cw * 0.75), wl: d.N > d.S ? Math.round(cw * 0.25) - GAP : 0, h: Math.max(d.L, Math.min(80, cw * 0.5)) };
  if (d.N === d.S) g.wc = cw;
  const boxes = [];
  text(ctx, "every layer (rows) and head (columns); each row on its layer's colour scale; click a map to open it", 10, 16);
  for (let layer = 0; layer < d.D; layer++) {
    text(ctx, `layer ${layer}`, 8, 44 + layer * (g.h + 12) + g.h / 2);
    for (let head = 0; head < d.H; head++) {
      const box = { x: 64 + head * (cw + 8), y: 36 + layer * (g.h + 12), ...g, layer, head };
      drawMap(ctx, d, sc, layer, head, box, d.vmax[sc][layer]);
      if (layer === st.layer && head === st.head) {
        ctx.strokeStyle = "#d62728"; ctx.lineWidth = 2;
        ctx.strokeRect(box.x - 2, box.y - 2, cw + 4, g.h + 4); ctx.lineWidth = 1;
      }
      boxes.push(box);
    }
  }
  for (let head = 0; head < d.H; head++) text(ctx, `h${head}`, 64 + head * (cw + 8) + cw / 2, 32, "center");
  return { height: 36 + d.D * (g.h + 12) + 10, hit: (mx, my) => {
    for (const box of boxes) {
      const c = hitMap(d, box, mx, my);
      if (c) return { ...c, layer: box.layer, head: box.head, open: { layer: box.layer, head: box.head, tab: "head" } };
    }
    return null;
  } };
}

// A dot per latent, for every (layer, head) across; y is a number between 0 and `top`.
function dotPlot(ctx, d, st, value, top, label, baseline, baselineText) {
  const x0 = 60, y0 = 40, h = 260, gw = Math.min(90, (W - 100) / (d.D * d.H)), dots = [];
  text(ctx, label, 10, 16);
  ctx.strokeStyle = "#888";
  ctx.strokeRect(x0, y0, gw * d.D * d.H, h);
  for (const t of [0, 0.5, 1]) text(ctx, (top * t).toFixed(2), x0 - 4, y0 + h - t * h + 4, "right");
  if (baseline !== null) {
    const y = y0 + h - (baseline / top) * h;
    ctx.setLineDash([5, 4]); ctx.strokeStyle = "#d62728";
    ctx.beginPath(); ctx.moveTo(x0, y); ctx.lineTo(x0 + gw * d.D * d.H, y); ctx.stroke(); ctx.setLineDash([]);
    text(ctx, baselineText, x0 + gw * d.D * d.H + 4, y + 4, "left", "#d62728");
  }
  for (let layer = 0; layer < d.D; layer++) {
    for (let head = 0; head < d.H; head++) {
      const gx = x0 + (layer * d.H + head) * gw;
      if (layer === st.layer && head === st.head) { ctx.fillStyle = "rgba(214,39,40,0.08)"; ctx.fillRect(gx, y0, gw, h); }
      let mean = 0;
      for (let i = 0; i < d.L; i++) {
        const v = value(st.scene, layer, head, i), x = gx + gw * (0.2 + (0.6 * (i + 0.5)) / d.L), y = y0 + h - (v / top) * h;
        mean += v / d.L;
        ctx.fillStyle = css(colour(d, i / Math.max(1, d.L - 1)), 0.9);
        ctx.beginPath(); ctx.arc(x, y, 3, 0, 2 * Math.PI); ctx.fill();
        dots.push({ x, y, layer, head, i, v });
      }
      ctx.strokeStyle = "#222";
      const ym = y0 + h - (mean / top) * h;
      ctx.beginPath(); ctx.moveTo(gx + 4, ym); ctx.lineTo(gx + gw - 4, ym); ctx.stroke();
      text(ctx, `L${layer}h${head}`, gx + gw / 2, y0 + h + 14, "center");
    }
  }
  text(ctx, "a dot per latent (colour: latent 0 … " + (d.L - 1) + "), a bar: the mean over latents; click to choose", x0, y0 + h + 32);
  return { height: y0 + h + 44, hit: (mx, my) => {
    let best = null, bd = 64;
    for (const p of dots) { const q = (p.x - mx) ** 2 + (p.y - my) ** 2; if (q < bd) { bd = q; best = p; } }
    return best && { layer: best.layer, head: best.head, i: best.i, value: best.v, open: { layer: best.layer, head: best.head, latent: best.i } };
  } };
}

function viewShare(ctx, d, st) {
  const uniform = d.S / d.N;
  return dotPlot(ctx, d, st, d.share, 1, "context share: each latent's attention on the s context keys (the rest goes to the latents' keys)",
    d.N > d.S ? uniform : null, `even spread s/(s+l) = ${uniform.toFixed(3)}`);
}

function viewEntropy(ctx, d, st) {
  const top = Math.log(d.N);
  return dotPlot(ctx, d, st, d.entropy, top, `attention entropy −Σ p log p in nats (0: one key; log(n) = ${top.toFixed(2)}: every key alike)`,
    top, `log(n) = ${top.toFixed(2)}`);
}

function viewImage(ctx, d, st, hover) {
  const { scene: sc, layer, head, latent } = st;
  if (!d.meta.grid) { text(ctx, "This input has no picture: its context tokens are not patches.", 10, 20); return { height: 40, hit: () => null }; }
  const size = 320, x0 = 10, y0 = 30;
  const weights = rowOf(d, sc, layer, head, latent), vmax = patchMax(d, weights);
  text(ctx, `layer ${layer}, head ${head}, latent ${latent} on ${d.meta.scenes[sc].label}`, 10, 16);
  drawImage(ctx, d, sc, size, x0, y0, weights, vmax);
  colourBar(ctx, d, x0, y0 + size + 8, size, vmax, "weight on each patch");
  // every latent, small, each on its own scale (0 to its largest patch weight); click to choose
  const cols = Math.min(d.L, 8), t = Math.min(120, Math.floor((W - size - 40) / cols) - 6), thumbs = [];
  const marked = hover && hover.readers ? hover.readers.map(([r]) => r) : [];
  for (let i = 0; i < d.L; i++) {
    const x = size + 30 + (i % cols) * (t + 6), y = y0 + Math.floor(i / cols) * (t + 20);
    const w = rowOf(d, sc, layer, head, i);
    drawImage(ctx, d, sc, t, x, y, w, patchMax(d, w));
    const on = i === latent || marked.includes(i);
    ctx.strokeStyle = marked.includes(i) ? "#d62728" : "#ff7f0e"; ctx.lineWidth = on ? 3 : 0.5;
    ctx.strokeRect(x - 1, y - 1, t + 2, t + 2); ctx.lineWidth = 1;
    text(ctx, `latent ${i}`, x + t / 2, y + t + 13, "center");
    thumbs.push({ x, y, i });
  }
  if (hover && hover.j !== undefined) {
    const g = d.meta.grid, p = hover.j - d.meta.cls, cell = size / g;
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 2;
    ctx.strokeRect(x0 + (p % g) * cell, y0 + Math.floor(p / g) * cell, cell, cell); ctx.lineWidth = 1;
  }
  const height = Math.max(y0 + size + 40, y0 + Math.ceil(d.L / cols) * (t + 20) + 10);
  return { height, hit: (mx, my) => {
    const j = patchAt(d, x0, y0, size, mx, my);
    if (j !== null) return { j, i: latent, layer, head, readers: readersOf(d, sc, layer, head, j) };
    const th = thumbs.find((q) => mx >= q.x && mx < q.x + t && my >= q.y && my < q.y + t);
    return th ? { i: th.i, layer, head, open: { latent: th.i } } : null;
  } };
}

const VIEWS = { head: viewHead, heads: viewHeads, grid: viewGrid, share: viewShare, entropy: viewEntropy, image: viewImage };

// -- the widget: controls, canvas, readout, events ----------------------------------------------

function render({ model, el }) {
  let d = load(model);
  let hover = null, hits = null;
  const root = document.createElement("div");
  root.className = "pe-view";
  root.tabIndex = 0; // focusable: arrow keys step layer and head
  root.dataset.peView = d.meta.name;
  root.dataset.peDrawn = "0";
  root.style.cssText = "font: 13px sans-serif; outline: none; max-width: 100%";
  const bar = document.createElement("div");
  const canvas = document.createElement("canvas");
  // a narrower page (the book's column) shrinks the picture; pointer positions are scaled back below
  canvas.style.cssText = "display: block; max-width: 100%; height: auto";
  const readout = document.createElement("div");
  readout.dataset.peReadout = "";
  readout.style.cssText = "font-family: monospace; min-height: 1.4em; margin: 4px 0";
  root.append(bar, readout, canvas);
  el.replaceChildren(root);

  const get = (k) => model.get(k);
  const state = () => {
    const c = (v, hi) => Math.max(0, Math.min(hi - 1, v | 0));
    return { scene: c(get("scene"), d.meta.scenes.length), layer: c(get("layer"), d.D), head: c(get("head"), d.H),
      latent: c(get("latent"), d.L), tab: VIEWS[get("tab")] ? get("tab") : "head" };
  };
  // From a kernel: new tensors (an architecture change), or a view control set from Python. One
  // message may change several fields; their events are gathered into one draw of the new data.
  let pending = false, stale = false;
  const later = (reload) => {
    stale = stale || reload;
    if (pending) return;
    pending = true;
    queueMicrotask(() => {
      pending = false;
      if (stale) { d = load(model); root.dataset.peView = d.meta.name; hover = null; stale = false; }
      draw();
    });
  };
  const choose = (values) => { // a view change: written to the model (the kernel hears of it, if any)
    for (const [k, v] of Object.entries(values)) model.set(k, v);
    model.save_changes();
    hover = null;
    later(false); // one draw, however many fields changed (anywidget's model also reports them)
  };

  // A row of buttons, one per value. The rows are built once per shape of the data (so a click never
  // lands on a button that a redraw replaced); each draw only marks the chosen ones as pressed.
  function buttons(label, key, values, names) {
    const row = document.createElement("div");
    row.style.margin = "2px 0";
    row.append(label ? label + " " : "");
    values.forEach((v, k) => {
      const b = document.createElement("button");
      b.textContent = names ? names[k] : String(v);
      b.dataset["pe" + key[0].toUpperCase() + key.slice(1)] = String(v);
      b.dataset.key = key;
      b.value = JSON.stringify(v);
      b.style.cssText = "margin: 1px; padding: 1px 6px; border: 1px solid #888; border-radius: 3px; cursor: pointer";
      b.onclick = () => choose({ [key]: v });
      row.append(b);
    });
    return row;
  }
  const range = (n) => Array.from({ length: n }, (_, k) => k);
  let shape = "";

  function controls(st) {
    const now = [d.D, d.H, d.L, d.meta.scenes.length].join(",");
    if (now !== shape) {
      shape = now;
      const rows = [buttons("", "tab", TABS.map((t) => t[0]), TABS.map((t) => t[1]))];
      if (d.meta.scenes.length > 1) rows.push(buttons("scene", "scene", range(d.meta.scenes.length), d.meta.scenes.map((s) => s.short || s.label)));
      rows.push(buttons("layer", "layer", range(d.D)));
      rows.push(buttons("head", "head", range(d.H)));
      rows.push(buttons("latent", "latent", range(d.L)));
      const help = document.createElement("div");
      help.style.cssText = "color: #555; font-size: 12px";
      help.textContent = "Arrow keys: \u2191 \u2193 layer, \u2190 \u2192 head. Hover the map or the image for values. Colours: viridis.";
      rows.push(help);
      bar.replaceChildren(...rows);
    }
    for (const b of bar.querySelectorAll("button")) {
      const on = JSON.stringify(st[b.dataset.key]) === b.value;
      b.setAttribute("aria-pressed", String(on));
      b.style.background = on ? "#1f77b4" : "#f4f4f4";
      b.style.color = on ? "#fff" : "#222";
    }
  }

  function describe(h, st) {
    if (!h) return "";
    if (h.value !== undefined) {
      const what = st.tab === "share" ? "context share" : "entropy (nats)";
      return `layer ${h.layer}, head ${h.head}, latent ${h.i}: ${what} ${h.value.toFixed(3)}`;
    }
    if (h.readers) {
      const who = h.readers.map(([r, w]) => `latent ${r} (${w.toFixed(3)})`).join(", ");
      return `layer ${h.layer}, head ${h.head}: ${keyText(d, h.j)} is read most by ${who}`;
    }
    if (h.j === undefined) return `latent ${h.i}: click to show it`;
    const w = d.attn[d.row(st.scene, h.layer, h.head, h.i) + h.j];
    return `layer ${h.layer}, head ${h.head}, latent ${h.i} → ${keyText(d, h.j)}: weight ${w.toFixed(3)}`;
  }

  function draw() {
    const st = state();
    controls(st);
    const ctx = canvas.getContext("2d");
    // size the canvas for this view: a dry run measures its height on a scratch canvas
    const scratch = document.createElement("canvas").getContext("2d");
    scratch.font = FONT;
    const height = VIEWS[st.tab](scratch, d, st, hover).height;
    if (canvas.width !== W || canvas.height !== height) { canvas.width = W; canvas.height = height; }
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.font = FONT;
    ctx.textBaseline = "alphabetic";
    hits = VIEWS[st.tab](ctx, d, st, hover);
    readout.textContent = describe(hover, st) || `${d.meta.scenes[st.scene].label} · ${TABS.find((t) => t[0] === st.tab)[1]}`;
    root.dataset.peDrawn = String(Number(root.dataset.peDrawn) + 1);
  }

  canvas.addEventListener("mousemove", (e) => {
    const r = canvas.getBoundingClientRect(), scale = canvas.width / r.width;
    const h = hits && hits.hit((e.clientX - r.left) * scale, (e.clientY - r.top) * scale);
    const same = JSON.stringify(h) === JSON.stringify(hover);
    hover = h;
    if (!same) draw();
  });
  canvas.addEventListener("mouseleave", () => { if (hover) { hover = null; draw(); } });
  canvas.addEventListener("click", () => {
    if (hover && hover.open) choose(hover.open);
    else if (hover && hover.i !== undefined && hover.layer !== undefined) choose({ latent: hover.i });
  });
  root.addEventListener("keydown", (e) => {
    const st = state(), step = { ArrowUp: ["layer", -1], ArrowDown: ["layer", 1], ArrowLeft: ["head", -1], ArrowRight: ["head", 1] }[e.key];
    if (!step) return;
    e.preventDefault();
    const [key, by] = step, hi = key === "layer" ? d.D : d.H;
    choose({ [key]: (st[key] + by + hi) % hi });
  });
  // (no focus() on mousedown: focusing scrolls the page, and a button that moves under the pointer
  // between press and release never gets its click; a click focuses the root, or a button inside it)

  model.on("change:attn", () => later(true));
  for (const k of ["scene", "layer", "head", "latent", "tab"]) model.on(`change:${k}`, () => later(false));
  draw();
  return () => { el.replaceChildren(); };
}

export default { render };
