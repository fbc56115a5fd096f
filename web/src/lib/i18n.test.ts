// Every problem code and scan reason the apps explain has a message in both languages, and a code the app does
// not know yet still shows the server's own detail rather than nothing.
import { describe, expect, it } from 'vitest';
import { problemCodes, problemText } from './i18n';

describe('localized problems', () => {
  it('English and Spanish explain the same codes', () => {
    expect(problemCodes('es')).toEqual(problemCodes('en'));
  });
  it('covers the purchase, check-in, market and wallet codes', () => {
    for (const code of [
      'sold_out',
      'hold_expired',
      'card_declined',
      'price_above_cap',
      'already_used',
      'superseded_generation',
      'stale_proof',
      'gift_not_pending',
      'export_not_allowed',
      'siwe_bad_signature',
      'invalid_enrolment_code',
    ]) {
      expect(problemCodes('en')).toContain(code);
    }
  });
  it('falls back to the detail, then to the code in words', () => {
    expect(problemText('brand_new_code', 'The server says why')).toBe('The server says why');
    expect(problemText('brand_new_code')).toBe('brand new code');
  });
});
