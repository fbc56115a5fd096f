/** Sound and vibration for a verdict: a high short beep to admit, two low beeps to refuse. */
let audio: AudioContext | null = null;

export function signal(ok: boolean): void {
  try {
    audio ??= new AudioContext();
    const beeps = ok ? [[880, 0, 0.12]] : [[220, 0, 0.15], [220, 0.22, 0.15]];
    for (const [freq, at, len] of beeps as [number, number, number][]) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = freq;
      gain.gain.value = 0.2;
      osc.connect(gain).connect(audio.destination);
      osc.start(audio.currentTime + at);
      osc.stop(audio.currentTime + at + len);
    }
  } catch {
    /* no audio output */
  }
  if ('vibrate' in navigator) navigator.vibrate(ok ? 80 : [120, 80, 120]);
}
