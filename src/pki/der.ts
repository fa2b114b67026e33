import { AsnAnyConverter, AsnArray, AsnConvert, AsnPropTypes, AsnType, AsnTypeTypes } from '@peculiar/asn1-schema';
import { Name } from '@peculiar/asn1-x509';

/**
 * Small DER helpers on top of @peculiar/asn1-schema. Nothing here writes DER by hand:
 * raw elements are only ever sliced out by the ASN.1 library and passed back to it.
 */

/** An exact ArrayBuffer copy of a Buffer (a Buffer's .buffer may be a shared pool). */
export function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return new Uint8Array(bytes).buffer;
}

/** A SEQUENCE whose elements are kept as their raw DER (tag, length and value). */
@AsnType({ type: AsnTypeTypes.Sequence, itemType: AsnPropTypes.Any })
class AnySequence extends AsnArray<ArrayBuffer> {}

/** The raw DER of each element of a DER SEQUENCE. Throws on malformed input. */
export function sequenceElements(der: Uint8Array): Buffer[] {
  return Array.from(AsnConvert.parse(der, AnySequence), (e) => Buffer.from(e));
}

/**
 * True when `der` is exactly one DER SEQUENCE: re-encoding its elements yields the same
 * bytes, so there is no trailing data and the outer length is minimal.
 */
export function isSingleDerSequence(der: Uint8Array): boolean {
  try {
    const again = Buffer.from(AsnConvert.serialize(new AnySequence(Array.from(AsnConvert.parse(der, AnySequence)))));
    return again.equals(der);
  } catch {
    return false;
  }
}

/**
 * A Name that serializes to the exact DER it was made from, so that an issuer name is
 * byte-identical to the issuer certificate's subject (RFC 5280 name chaining) whatever
 * string types or ordering that certificate used.
 */
export class RawName extends Name {
  static override get [Symbol.species](): ArrayConstructor {
    return Array;
  }

  readonly #der: ArrayBuffer;

  constructor(der: Uint8Array) {
    super();
    this.#der = toArrayBuffer(der);
    // Keep the parsed RDNs too, for readers of the object.
    this.push(...AsnConvert.parse(der, Name));
  }

  toASN(): ReturnType<typeof AsnAnyConverter.toASN> {
    return AsnAnyConverter.toASN(this.#der);
  }

  fromASN(): this {
    throw new Error('RawName is write-only');
  }
}
