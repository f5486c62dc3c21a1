// A tiny time-series line chart on <canvas>: a few series, a sliding window, auto-scaled y axis,
// crisp on high-DPI screens, redrawn on resize. Colours come from CSS custom properties so the
// chart follows the page's light/dark theme.

const PAD = { left: 48, right: 10, top: 22, bottom: 20 };

export class LineChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{series: {key: string, label: string, color: string}[], windowMs?: number, unit?: string, format?: (v: number) => string, minMax?: number}} opts
   *   color: a CSS custom property name (e.g. '--planner') or a colour.
   */
  constructor(canvas, opts) {
    this.canvas = canvas;
    this.series = opts.series;
    this.windowMs = opts.windowMs ?? 5 * 60_000;
    this.unit = opts.unit ?? '';
    this.format = opts.format ?? ((v) => formatNumber(v));
    this.minMax = opts.minMax ?? 1;
    this.points = []; // {t, values: {key: number|null}}
    this.queued = false;
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  /** Adds one sample (missing or null values leave a gap in that series). */
  push(t, values) {
    this.points.push({ t, values });
    const cutoff = t - this.windowMs;
    while (this.points.length > 2 && this.points[0].t < cutoff) this.points.shift();
    this.draw();
  }

  draw() {
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(() => { this.queued = false; this.paint(); });
  }

  color(c) {
    return c.startsWith('--') ? getComputedStyle(this.canvas).getPropertyValue(c).trim() || '#888' : c;
  }

  paint() {
    const { canvas } = this;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (w === 0 || h === 0) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const text = this.color('--muted');
    const grid = this.color('--border');
    ctx.font = '11px system-ui, sans-serif';

    const now = this.points.length ? this.points[this.points.length - 1].t : Date.now();
    // The window grows with the data (at least a minute) up to its full width, so a fresh page
    // does not squeeze its first samples against the right edge.
    const span = this.points.length ? now - this.points[0].t : 0;
    const windowMs = Math.min(this.windowMs, Math.max(60_000, span));
    const t0 = now - windowMs;
    let max = this.minMax;
    for (const p of this.points) for (const s of this.series) {
      const v = p.values[s.key];
      if (typeof v === 'number' && Number.isFinite(v) && v > max) max = v;
    }
    max = niceCeil(max);
    const plotW = w - PAD.left - PAD.right;
    const plotH = h - PAD.top - PAD.bottom;
    const x = (t) => PAD.left + ((t - t0) / windowMs) * plotW;
    const y = (v) => PAD.top + plotH - (v / max) * plotH;

    // Grid and y labels.
    ctx.strokeStyle = grid;
    ctx.fillStyle = text;
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    // 4 or 5 bands, whichever gives rounder labels (50 → 10s, 2 → 0.5s).
    const decimals = (v) => (String(v).split('.')[1] ?? '').length;
    const bands = decimals(max / 5) < decimals(max / 4) ? 5 : 4;
    for (let i = 0; i <= bands; i++) {
      const v = (max / bands) * i;
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(PAD.left, yy); ctx.lineTo(w - PAD.right, yy); ctx.stroke();
      ctx.fillText(this.format(v), PAD.left - 6, yy);
    }
    // x labels: time ago, at most ~6 ticks.
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    const step = [10_000, 15_000, 30_000, 60_000, 120_000].find((s) => windowMs / s <= 6) ?? 300_000;
    for (let ago = 0; ago <= windowMs + 1; ago += step) {
      const label = ago === 0 ? 'now' : ago % 60_000 === 0 ? `-${ago / 60_000}m` : `-${ago / 1000}s`;
      ctx.fillText(label, Math.max(PAD.left + 10, x(now - ago)), h - PAD.bottom + 5);
    }

    // Series.
    ctx.lineWidth = 2;
    ctx.lineJoin = 'round';
    for (const s of this.series) {
      ctx.strokeStyle = this.color(s.color);
      ctx.beginPath();
      let drawing = false;
      for (const p of this.points) {
        const v = p.values[s.key];
        if (typeof v !== 'number' || !Number.isFinite(v)) { drawing = false; continue; }
        const px = x(p.t);
        const py = y(Math.min(v, max));
        if (drawing) ctx.lineTo(px, py); else ctx.moveTo(px, py);
        drawing = true;
      }
      ctx.stroke();
    }

    // Legend (top), with each series' latest value.
    ctx.textAlign = 'left';
    ctx.textBaseline = 'middle';
    let lx = PAD.left;
    const last = this.points[this.points.length - 1]?.values ?? {};
    for (const s of this.series) {
      const v = last[s.key];
      const label = `${s.label}: ${typeof v === 'number' && Number.isFinite(v) ? this.format(v) : '–'}`;
      ctx.fillStyle = this.color(s.color);
      ctx.fillRect(lx, 7, 10, 3);
      ctx.fillStyle = text;
      ctx.fillText(label, lx + 14, 9);
      lx += ctx.measureText(label).width + 30;
    }
  }
}

export function formatNumber(v) {
  if (!Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  if (a >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  if (a >= 10 || Number.isInteger(v)) return String(Math.round(v));
  return v.toFixed(a >= 1 ? 1 : 2);
}

/** The next "round" number at or above v (1, 2, 2.5, 5 × 10^n). */
function niceCeil(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
