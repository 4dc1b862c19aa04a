import type { MapReader } from "./map-readers.js";

/** A map key as {@link PlainDecoder} reads it: a string, or a number (which names the property `String(n)`). */
export type MapKey = string | number;

/** Builds the object of one key sequence from its values, in order (unused arguments are undefined). */
export type ObjectMaker = (v0: unknown, v1: unknown, v2: unknown, v3: unknown) => Record<string, unknown>;

/** Maps of more keys are built key by key. */
export const MAX_SHAPE_KEYS = 4;
/** Maps decoded with one key sequence before a maker is made for it: one-off shapes are not worth one. */
const MAKE_AFTER = 8;
/** Key sequences tracked per decoder; past this, new ones are built key by key. */
const MAX_SHAPES = 2048;
/** Makers per decoder. */
const MAX_MAKERS = 256;
/** Longest string key a key sequence holds: a node keeps its key, and keys are the peer's to choose. */
const MAX_KEY_LENGTH = 64;

/** One key sequence: the keys on the way from the root to it. */
export class ShapeNode {
  readonly parent: ShapeNode | undefined;
  readonly key: MapKey | undefined;
  /** The child last stepped to, checked before the map of all children: a stream repeats one sequence. */
  lastKey: MapKey | undefined;
  lastChild: ShapeNode | undefined;
  children: Map<MapKey, ShapeNode> | undefined;
  /** Maps decoded with exactly this key sequence, until it has a maker. */
  uses = 0;
  maker: ObjectMaker | undefined;
  /** The reader of maps with these keys in the encoding first met with a maker (see MapReaders); null when they cannot have one. */
  reader: MapReader | null | undefined;

  constructor(parent: ShapeNode | undefined, key: MapKey | undefined) {
    this.parent = parent;
    this.key = key;
  }
}

/**
 * Object makers per key sequence, for the decoder. Building a decoded map
 * key by key (`object[key] = value`) goes through a store that has seen
 * every shape the process decodes, which V8 then handles generically: for a
 * `{seq, value}` item that was about 430 instructions of some 1,650 for the
 * whole decode (callgrind). A key sequence of up to {@link MAX_SHAPE_KEYS}
 * keys met {@link MAKE_AFTER} times gets a function returning an object
 * literal of its keys, so each shape is built by code that only ever sees
 * that shape. At most 2,048 sequences of keys up to 64 characters are
 * tracked, and 256 makers made, per decoder: a peer sending ever new keys
 * gets its maps built key by key, as before.
 *
 * The maker is compiled from the keys (`new Function`): each key is written
 * as `JSON.stringify(String(key))`, a string literal whatever the key holds
 * (JSON text is valid JavaScript), and `__proto__`, the one key a literal
 * treats differently from an assignment, never gets here (the decoder
 * refuses it). The literal then makes the same properties, in the same
 * order, with the same attributes, as assigning them one by one; duplicate
 * keys keep the last value, as assignment does. Where code generation is
 * disallowed (`--disallow-code-generation-from-strings`) every map is built
 * key by key, as before.
 */
export class ObjectShapes {
  readonly root = new ShapeNode(undefined, undefined);
  private shapes = 1;
  private makers = 0;
  private disabled = false;

  /** The key sequence `node`'s keys then `key`; undefined for a long key, or once too many are tracked. */
  next(node: ShapeNode, key: MapKey): ShapeNode | undefined {
    if (node.lastKey === key) return node.lastChild;
    let child = node.children?.get(key);
    if (child === undefined) {
      if (this.shapes >= MAX_SHAPES || (typeof key === "string" && key.length > MAX_KEY_LENGTH)) return undefined;
      this.shapes++;
      child = new ShapeNode(node, key);
      (node.children ??= new Map()).set(key, child);
    }
    node.lastKey = key;
    node.lastChild = child;
    return child;
  }

  /** The maker of the objects whose key sequence is `node`, once it is common enough to have one. */
  maker(node: ShapeNode): ObjectMaker | undefined {
    if (node.maker !== undefined) return node.maker;
    if (++node.uses < MAKE_AFTER || this.disabled || this.makers >= MAX_MAKERS) return undefined;
    const properties: string[] = [];
    for (let at: ShapeNode | undefined = node; at?.parent !== undefined; at = at.parent) {
      properties.push(JSON.stringify(String(at.key)));
    }
    properties.reverse();
    const body = `return {${properties.map((name, i) => `${name}: v${i}`).join(", ")}};`;
    try {
      node.maker = new Function("v0", "v1", "v2", "v3", body) as ObjectMaker;
    } catch {
      // Code generation from strings is disallowed here.
      this.disabled = true;
      return undefined;
    }
    this.makers++;
    return node.maker;
  }
}
