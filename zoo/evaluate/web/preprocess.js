// A photo as the model's input, prepared as `zoo predict` prepares it (zoo.data.cache.decode_array,
// zoo.data.transforms.eval_array): decoded as RGB with its EXIF orientation applied and
// transparency on white, the shorter side resized to `resize_side` with Pillow's bicubic filter,
// centre-cropped to `image_size`, float32 in [0, 1], NCHW.
//
// `zoo predict` decodes a large JPEG at a reduced scale (libjpeg's DCT scaling, Pillow's draft)
// before resizing it. A browser cannot decode at a reduced scale, so the full photo is averaged
// over the same blocks (Pillow's reduce): nearly, not exactly, the same pixels (README, `zoo
// export --format web`, gives the measured difference in probabilities).
import { reduce, resize, roundHalfEven } from './pillow.js';

// Limits of zoo.data.imaging (MAX_PIXELS, MAX_ASPECT).
const MAX_PIXELS = 64_000_000;
const MAX_ASPECT = 20;

export class PhotoError extends Error {}

// The photo's pixels: {width, height, data (RGB bytes), jpeg}.
export async function decodePhoto(blob) {
  const head = new Uint8Array(await blob.slice(0, 3).arrayBuffer());
  const jpeg = head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff;
  let bitmap;
  try {
    // colorSpaceConversion 'none': the stored values, as Pillow reads them (no colour profile).
    bitmap = await createImageBitmap(blob, {
      imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch {
    throw new PhotoError('This file is not an image the browser can read.');
  }
  const { width, height } = bitmap;
  if (width * height > MAX_PIXELS) {
    bitmap.close();
    throw new PhotoError(`The photo is too large (${width}x${height}); the limit is 64 megapixels.`);
  }
  if (Math.max(width, height) > MAX_ASPECT * Math.min(width, height)) {
    bitmap.close();
    throw new PhotoError(`The photo is longer than ${MAX_ASPECT}:1 (${width}x${height}); crop it first.`);
  }
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const data = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < data.length; i += 3, j += 4) {
    data[i] = rgba[j];
    data[i + 1] = rgba[j + 1];
    data[i + 2] = rgba[j + 2];
  }
  return { width, height, data, jpeg };
}

// zoo.data.imaging.short_side_size.
function shortSideSize(width, height, side) {
  const scale = side / Math.min(width, height);
  return [Math.max(1, roundHalfEven(width * scale)), Math.max(1, roundHalfEven(height * scale))];
}

// The draft scale (1, 2, 4 or 8) Pillow decodes a JPEG at for a shorter side of at least
// `minSide` (zoo.data.imaging._decode, then PIL.JpegImagePlugin.draft).
function draftScale(width, height, minSide) {
  const scale = Math.min(width, height) / minSide;
  if (scale < 2) return 1;
  const wanted = [Math.trunc(width / scale) + 1, Math.trunc(height / scale) + 1];
  const fits = Math.min(Math.floor(width / wanted[0]), Math.floor(height / wanted[1]));
  return [8, 4, 2, 1].find((s) => fits >= s);
}

// zoo.data.cache.decode_array: the photo with its shorter side `side` px.
export function shortSideView(photo, side, draftMargin) {
  const [width, height] = shortSideSize(photo.width, photo.height, side);
  const s = photo.jpeg ? draftScale(photo.width, photo.height, draftMargin * side) : 1;
  const source = s > 1 ? reduce(photo, s) : photo;
  const gap = side / Math.min(source.width, source.height) < 0.5 ? 3.0 : null;
  return resize(source, width, height, gap);
}

// zoo.data.transforms.center_crop.
export function centreCrop(img, size) {
  const top = Math.max(0, Math.floor((img.height - size) / 2));
  const left = Math.max(0, Math.floor((img.width - size) / 2));
  const w = Math.min(size, img.width - left), h = Math.min(size, img.height - top);
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    const from = ((top + y) * img.width + left) * 3;
    data.set(img.data.subarray(from, from + w * 3), y * w * 3);
  }
  return { width: w, height: h, data };
}

// float32 RGB in [0, 1], NCHW (zoo.evaluate.export.to_input).
export function toInput(img) {
  const plane = img.width * img.height;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    out[i] = img.data[i * 3] / 255;
    out[plane + i] = img.data[i * 3 + 1] / 255;
    out[2 * plane + i] = img.data[i * 3 + 2] / 255;
  }
  return out;
}

// The model's input for `blob`, with `pre` from model.json ("preprocessing").
export async function preparePhoto(blob, pre) {
  const view = shortSideView(await decodePhoto(blob), pre.resize_side, pre.draft_margin);
  const crop = centreCrop(view, pre.image_size);
  return { input: toInput(crop), width: crop.width, height: crop.height };
}
