import { between } from "./seeded-random.js";

/** Numbers at every MessagePack int boundary, floats, and the odd ones (NaN, infinities, -0, past 2^53). */
export const NUMBERS = [
  0,
  1,
  127,
  128,
  255,
  256,
  65535,
  65536,
  0xffff_ffff,
  -1,
  -32,
  -33,
  -128,
  -129,
  -32768,
  -32769,
  -0x8000_0000,
  0.5,
  -1.25,
  1e300,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  Number.NEGATIVE_INFINITY,
  -0,
  2 ** 53 + 2,
];
/** Strings at the fixstr/str8/str16 boundaries, past the decoders' short-string paths, and non-ASCII. */
export const STRINGS = [
  "",
  "a",
  "item",
  "x".repeat(31),
  "x".repeat(32),
  "y".repeat(255),
  "y".repeat(256),
  "z".repeat(70_000),
  "héllo",
  "日本語",
  "😀 emoji",
  "é".repeat(20),
];

/**
 * A seeded random plain value, what calls and items usually carry: nil,
 * booleans, numbers, strings, bytes, and arrays and maps of them nested up
 * to a few levels. Map keys repeat, as in a stream of similar objects.
 */
export function randomPlainValue(rand: () => number, depth = 0): unknown {
  switch (between(rand, 0, depth > 4 ? 5 : 8)) {
    case 0:
      return null;
    case 1:
      return rand() < 0.5;
    case 2:
      return NUMBERS[between(rand, 0, NUMBERS.length - 1)];
    case 3:
      return between(rand, -5_000_000, 5_000_000) * (rand() < 0.2 ? 0.37 : 1);
    case 4:
      return STRINGS[between(rand, 0, STRINGS.length - 1)];
    case 5:
      return Buffer.from(Array.from({ length: between(rand, 0, 300) }, () => between(rand, 0, 255)));
    case 6:
      return Array.from({ length: between(rand, 0, rand() < 0.1 ? 20 : 5) }, () => randomPlainValue(rand, depth + 1));
    case 7: {
      const o: Record<string, unknown> = {};
      for (let i = between(rand, 0, rand() < 0.1 ? 20 : 5); i > 0; i--) {
        o[`${STRINGS[between(rand, 0, 4)] as string}${between(rand, 0, 30)}`] = randomPlainValue(rand, depth + 1);
      }
      return o;
    }
    default:
      return undefined;
  }
}

/**
 * An object of `keys` (in that order) whose values are, at random, one of
 * {@link NUMBERS} (40%), one of {@link STRINGS} (18%) or a random plain value:
 * what a stream's items of one key sequence look like to the compiled map
 * writers and readers, edge cases included.
 */
export function randomObject(rand: () => number, keys: readonly string[]): Record<string, unknown> {
  const value = (): unknown =>
    rand() < 0.4
      ? NUMBERS[between(rand, 0, NUMBERS.length - 1)]
      : rand() < 0.3
        ? STRINGS[between(rand, 0, STRINGS.length - 1)]
        : randomPlainValue(rand);
  return Object.fromEntries(keys.map((k) => [k, value()]));
}
