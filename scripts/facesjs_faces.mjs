#!/usr/bin/env node
// Random cartoon faces from facesjs, reproducibly, for dfd_kit's synthetic
// DeepFaceDrawing training set.
//
//   node scripts/facesjs_faces.mjs --seed 0 --n 2000            # JSON lines on stdout
//   node scripts/facesjs_faces.mjs --seed 0 --n 8 --out faces/  # files in faces/
//
// Each face is one JSON object:
//   {"index": i, "sex": "male"|"female", "face": <facesjs FaceConfig>, "svg": "<svg ...>"}
// With --out DIR the same goes to DIR/NNNNN.json (index, sex, face) and
// DIR/NNNNN.svg (the colour SVG). The line drawing of the face is made from this
// SVG on the Python side (dfd_kit.data.facesjs), so there is one place that
// decides what a "sketch" is.
//
// Every facial-feature group in the SVG is tagged <g class="dfd-FEATURE"> (FEATURE
// is a facesjs feature name: eye, eyebrow, nose, mouth, hair, head, ...), so the
// Python side can find where the eyes, nose and mouth landed and align the face.
//
// Determinism: facesjs draws its random numbers from Math.random, which we replace
// by a seeded PRNG (mulberry32). Face i is seeded from (seed, i) alone, so the first
// k faces of a run with --n 2000 are the same as a run with --n k, and --start lets
// a caller produce any slice. Even indices are male, odd indices female, so every
// prefix is half and half.
import { writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { generate, faceToSvgString, svgs } from "facesjs";

function parseArgs(argv) {
  const args = { seed: 0, n: 1, start: 0, out: null, accessories: false, colours: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--seed") args.seed = Number(next());
    else if (a === "--n") args.n = Number(next());
    else if (a === "--start") args.start = Number(next());
    else if (a === "--out") args.out = next();
    else if (a === "--accessories") args.accessories = true;
    else if (a === "--colours") args.colours = true;
    else if (a === "--help" || a === "-h") {
      process.stdout.write(
        "usage: facesjs_faces.mjs [--seed S] [--n N] [--start K] [--out DIR] [--accessories] [--colours]\n" +
          "  --accessories  keep facesjs' glasses, hats and headbands (off by default: they\n" +
          "                 hide the eyes and hair that DeepFaceDrawing's components model)\n" +
          "  --colours      keep facesjs' random skin and hair colours (off by default: a line\n" +
          "                 sketch does not show colour, so a model could only guess it)\n",
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  for (const k of ["seed", "n", "start"]) {
    if (!Number.isInteger(args[k]) || args[k] < 0) throw new Error(`--${k} must be a non-negative integer`);
  }
  return args;
}

// mulberry32: a tiny 32-bit PRNG with good enough statistics for picking
// cartoon features; returns floats in [0, 1) like Math.random.
function mulberry32(a) {
  return function () {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Mix (seed, index) into one 32-bit state so neighbouring indices get unrelated
// streams (a murmur3-style finaliser).
function faceSeed(seed, index) {
  let h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

// Tag each feature's SVG snippet. facesjs wraps every snippet in a <g> of its own
// and computes bounding boxes from the ' d="' path data only, so an extra group
// level changes neither placement nor appearance. Empty snippets ("none") stay
// empty: facesjs skips them.
function tagFeatures() {
  for (const [feature, byId] of Object.entries(svgs)) {
    for (const [id, snippet] of Object.entries(byId)) {
      if (snippet && !snippet.startsWith('<g class="dfd-')) {
        byId[id] = `<g class="dfd-${feature}">${snippet}</g>`;
      }
    }
  }
}

// The fixed palette (see --colours).
const SKIN = "#bb876f";
const HAIR = "#272421";

function main() {
  const args = parseArgs(process.argv.slice(2));
  tagFeatures();
  if (args.out) mkdirSync(args.out, { recursive: true });
  const realRandom = Math.random;
  // Without accessories: no glasses, hats or headbands. Without colours: one skin tone
  // and one hair colour (facesjs' most common hair colour and a mid skin tone from its
  // palettes). Overrides are applied after the random draw, so the random stream (and
  // every shape) is the same either way.
  const overrides = {};
  if (!args.accessories) Object.assign(overrides, { glasses: { id: "none" }, accessories: { id: "none" } });
  if (!args.colours) Object.assign(overrides, { body: { color: SKIN }, hair: { color: HAIR } });
  try {
    for (let index = args.start; index < args.start + args.n; index++) {
      Math.random = mulberry32(faceSeed(args.seed, index));
      const sex = index % 2 === 0 ? "male" : "female";
      const face = generate(overrides, { gender: sex });
      // faceToSvgString may edit the face (a hat swaps some hair styles): keep the
      // parameters as generated.
      const params = structuredClone(face);
      const svg = faceToSvgString(face);
      const record = { index, sex, face: params };
      if (args.out) {
        const stem = String(index).padStart(5, "0");
        writeFileSync(join(args.out, `${stem}.json`), JSON.stringify(record) + "\n");
        writeFileSync(join(args.out, `${stem}.svg`), svg + "\n");
      } else {
        record.svg = svg;
        process.stdout.write(JSON.stringify(record) + "\n");
      }
    }
  } finally {
    Math.random = realRandom;
  }
}

try {
  main();
} catch (err) {
  process.stderr.write(`facesjs_faces.mjs: ${err.message}\n`);
  process.exit(2);
}
