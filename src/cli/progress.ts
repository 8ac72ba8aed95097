// Progress of a long command on a terminal: one line on stderr, redrawn every half second;
// nothing when stderr is not a terminal (scripts and logs get the final result only).

const EVERY_MS = 500;

export interface Progress {
  /** Stops redrawing and clears the line. */
  done(): void;
}

export function showProgress(line: () => string, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!stream.isTTY) return { done: () => undefined };
  const draw = (): void => { stream.write(`\r\x1b[K${line()}`); };
  draw();
  const timer = setInterval(draw, EVERY_MS);
  timer.unref();
  return {
    done() {
      clearInterval(timer);
      stream.write('\r\x1b[K');
    },
  };
}
