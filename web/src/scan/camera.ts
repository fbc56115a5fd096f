/** Camera scanning: the browser's BarcodeDetector where it exists, jsQR on canvas frames otherwise. */
import jsQR from 'jsqr';

interface Detector {
  detect(source: CanvasImageSource): Promise<{ rawValue: string }[]>;
}
declare global {
  interface Window {
    BarcodeDetector?: new (opts: { formats: string[] }) => Detector;
  }
}

/** Starts the camera into `video` and calls `onCode` for every QR read; returns a function that stops it. */
export async function startCamera(video: HTMLVideoElement, onCode: (text: string) => void): Promise<() => void> {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' }, audio: false });
  video.srcObject = stream;
  video.setAttribute('playsinline', 'true');
  await video.play();
  const detector = window.BarcodeDetector ? new window.BarcodeDetector({ formats: ['qr_code'] }) : null;
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  let running = true;
  let busy = false;
  const tick = async () => {
    if (!running) return;
    if (!busy && video.readyState >= 2) {
      busy = true;
      try {
        if (detector) {
          const codes = await detector.detect(video);
          if (codes[0]) onCode(codes[0].rawValue);
        } else if (ctx) {
          canvas.width = video.videoWidth;
          canvas.height = video.videoHeight;
          ctx.drawImage(video, 0, 0);
          const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
          const code = jsQR(img.data, img.width, img.height, { inversionAttempts: 'dontInvert' });
          if (code) onCode(code.data);
        }
      } catch {
        /* a frame that cannot be read: try the next */
      } finally {
        busy = false;
      }
    }
    requestAnimationFrame(() => void tick());
  };
  void tick();
  return () => {
    running = false;
    stream.getTracks().forEach((t) => t.stop());
    video.srcObject = null;
  };
}
