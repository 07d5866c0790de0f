// Pillow's resampling, ported to JavaScript so the page prepares a photo exactly as `zoo predict`
// does (Pillow 13's libImaging/Resample.c and Reduce.c, 8-bit RGB): `Image.reduce` (box averaging by
// integer factors) and `Image.resize` with the BICUBIC filter, antialiased when shrinking, in the
// same fixed-point arithmetic, so the pixels are identical (tests/test_webapp_browser.py checks
// it against Pillow). A canvas drawImage resizes with another filter and is not used.
//
// An image is {width, height, data}: data a Uint8Array of width * height * 3 RGB bytes.

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);
const BICUBIC_SUPPORT = 2.0;

function bicubic(x) {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

// Resample.c precompute_coeffs + normalize_coeffs_8bpc: for each output pixel the first input
// pixel, how many it reads and their fixed-point weights. in0/in1 are C floats there.
function coefficients(inSize, in0, in1, outSize) {
  in0 = Math.fround(in0);
  in1 = Math.fround(in1);
  const scale = Math.fround(in1 - in0) / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = BICUBIC_SUPPORT * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const weights = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      weights[x] = bicubic((x + xmin - center + 0.5) * ss);
      ww += weights[x];
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0.0 ? weights[x] / ww : weights[x];
      kk[xx * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * ONE : 0.5 + w * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(ss) {
  const v = Math.floor(ss / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// One pass along x (horizontal) or y: out has outSize pixels along that axis, rows `first`..
// of the input feed it (Resample.c ResampleHorizontal_8bpc / ResampleVertical_8bpc).
function horizontal(img, outWidth, rows, first, c) {
  const out = new Uint8Array(outWidth * rows * 3);
  const { ksize, bounds, kk } = c;
  for (let y = 0; y < rows; y++) {
    const row = (y + first) * img.width * 3;
    for (let xx = 0; xx < outWidth; xx++) {
      const xmin = bounds[xx * 2], n = bounds[xx * 2 + 1], k = xx * ksize;
      let s0 = HALF, s1 = HALF, s2 = HALF;
      for (let x = 0; x < n; x++) {
        const p = row + (x + xmin) * 3, w = kk[k + x];
        s0 += img.data[p] * w;
        s1 += img.data[p + 1] * w;
        s2 += img.data[p + 2] * w;
      }
      const o = (y * outWidth + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return { width: outWidth, height: rows, data: out };
}

function vertical(img, outHeight, c, offset) {
  const out = new Uint8Array(img.width * outHeight * 3);
  const { ksize, bounds, kk } = c;
  const stride = img.width * 3;
  for (let yy = 0; yy < outHeight; yy++) {
    const ymin = bounds[yy * 2] - offset, n = bounds[yy * 2 + 1], k = yy * ksize;
    for (let x = 0; x < stride; x++) {
      let s = HALF;
      for (let y = 0; y < n; y++) s += img.data[(y + ymin) * stride + x] * kk[k + y];
      out[yy * stride + x] = clip8(s);
    }
  }
  return { width: img.width, height: outHeight, data: out };
}

// ImagingResampleInner (Pillow 13) with the BICUBIC filter; box = [x0, y0, x1, y1] of the input.
// The vertical pass goes first when the height shrinks more than twice as much as the width.
function resampleBox(img, width, height, box) {
  box = box.map(Math.fround);
  const needH = width !== img.width || box[0] !== 0 || box[2] !== width;
  const needV = height !== img.height || box[1] !== 0 || box[3] !== height;
  const ch = coefficients(img.width, box[0], box[2], width);
  const cv = coefficients(img.height, box[1], box[3], height);
  const shrinkY = img.height - height;
  if (shrinkY > 0 && shrinkY > (img.width - width) * 2) {
    const out = needV ? vertical(img, height, cv, 0) : img;
    return needH ? horizontal(out, width, out.height, 0, ch) : out;
  }
  const first = cv.bounds[0];
  const last = cv.bounds[height * 2 - 2] + cv.bounds[height * 2 - 1];
  let out = img, offset = 0;
  if (needH) {
    out = horizontal(img, width, last - first, first, ch);
    offset = first;
  }
  return needV ? vertical(out, height, cv, offset) : out;
}

// Reduce.c: each output pixel is the rounded mean of an fx x fy block (partial blocks at the
// right and bottom edges average what they have), in Pillow's fixed-point arithmetic.
export function reduce(img, fx, fy = fx) {
  const width = Math.ceil(img.width / fx), height = Math.ceil(img.height / fy);
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const y0 = y * fy, y1 = Math.min(y0 + fy, img.height);
    for (let x = 0; x < width; x++) {
      const x0 = x * fx, x1 = Math.min(x0 + fx, img.width);
      const count = (x1 - x0) * (y1 - y0);
      const multiplier = Math.trunc(Math.fround(4294967296 / (256 * count)));  // a C float
      const amend = Math.trunc(count / 2);
      let s0 = amend, s1 = amend, s2 = amend;
      for (let yy = y0; yy < y1; yy++) {
        for (let xx = x0; xx < x1; xx++) {
          const p = (yy * img.width + xx) * 3;
          s0 += img.data[p];
          s1 += img.data[p + 1];
          s2 += img.data[p + 2];
        }
      }
      const o = (y * width + x) * 3;
      out[o] = Math.floor(s0 * multiplier / 16777216);
      out[o + 1] = Math.floor(s1 * multiplier / 16777216);
      out[o + 2] = Math.floor(s2 * multiplier / 16777216);
    }
  }
  return { width, height, data: out };
}

// Image.resize(size, Image.Resampling.BICUBIC, reducing_gap=reducingGap).
export function resize(img, width, height, reducingGap = null) {
  if (img.width === width && img.height === height) return img;
  let box = [0, 0, img.width, img.height];
  if (reducingGap !== null) {
    const fx = Math.trunc(img.width / width / reducingGap) || 1;
    const fy = Math.trunc(img.height / height / reducingGap) || 1;
    if (fx > 1 || fy > 1) {
      box = [0, 0, img.width / fx, img.height / fy];
      img = reduce(img, fx, fy);
    }
  }
  return resampleBox(img, width, height, box);
}

// Python's round(): halves go to the even neighbour.
export function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
