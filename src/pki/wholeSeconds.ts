/** A time as X.509, CRLs and OCSP encode it: whole seconds (UTCTime and GeneralizedTime carry no fraction here). */
export const wholeSeconds = (t: Date | number): Date => new Date(Math.floor((typeof t === 'number' ? t : t.getTime()) / 1000) * 1000);
