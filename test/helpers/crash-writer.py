#!/usr/bin/python3
"""A real NBD client (libnbd's aio API) for the crash loop (test/helpers/crash-loop.ts).

First it reads the whole device into DUMP (the loop checks it against what was acknowledged
before the last kill). Then CONNS connections, each with up to DEPTH requests in flight,
write self-describing 512-byte sectors until the gateway dies or DURATION seconds pass:

  offset  0  magic b"S3NBDCRL"
          8  sector number (u64 LE)
         16  write sequence (u64 LE; unique for the whole loop)
         24  writer id (u32 LE)
         28  filler derived from (sequence, sector)
        508  CRC-32 of bytes 0..507 (u32 LE)

Every event goes to stdout as one line, written before the request is issued or after its
reply arrived, so the loop can rebuild exactly what was in flight at the kill:

  I SEQ WRITER KIND SECTOR COUNT   issued (KIND W write, Z write-zeroes, T trim)
  A SEQ                            acknowledged
  E SEQ ERRNO                      failed (the loop treats it as still in flight)
  FI N                             flush N about to be issued
  F N                              flush N acknowledged
  R COUNT                          a read-back of COUNT sectors matched this run's model
  V TEXT                           a read-back did not match (a violation)

At most one request touches a sector at a time (a sector lock shared by all connections), so
each sector has one acknowledged state and at most one write in flight: the model is exact.
"""

import argparse
import random
import struct
import sys
import threading
import time
import zlib

import nbd

SECTOR = 512
MAGIC = b"S3NBDCRL"
SECTOR_ZERO = bytes(SECTOR)


def sector_bytes(sector, seq, writer):
    head = struct.pack("<8sQQI", MAGIC, sector, seq, writer)
    filler = (struct.pack("<QQ", seq ^ 0x5A5A5A5A5A5A5A5A, sector) * 32)[: SECTOR - 4 - len(head)]
    body = head + filler
    return body + struct.pack("<I", zlib.crc32(body))


def parse_sector(data):
    """(sector, seq, writer) of a valid sector, 'zero', or None for anything else."""
    if data == SECTOR_ZERO:
        return "zero"
    if data[:8] != MAGIC or struct.unpack_from("<I", data, 508)[0] != zlib.crc32(data[:508]):
        return None
    sector, seq, writer = struct.unpack_from("<QQI", data, 8)
    return (sector, seq, writer)


class Writer:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.lock = threading.RLock()
        self.busy = set()  # sectors with a request in flight
        self.model = {}  # sector -> seq acknowledged in this run (0 = zeros)
        self.seq = args.seq_start
        self.flushes = 0
        self.out = []
        self.deadline = time.monotonic() + args.duration
        self.sectors = args.size // SECTOR

    def emit(self, line):
        # Under self.lock. Buffered: the loop reads stdout once the writer has exited.
        self.out.append(line)
        if len(self.out) >= 256:
            sys.stdout.write("\n".join(self.out) + "\n")
            self.out.clear()

    def flush_out(self):
        with self.lock:
            if self.out:
                sys.stdout.write("\n".join(self.out) + "\n")
                self.out.clear()
            sys.stdout.flush()

    def pick(self, rng):
        """A free range of sectors, locked; None if the chosen one is busy."""
        r = rng.random()
        count = rng.randint(1, 8) if r < 0.6 else rng.randint(9, 256) if r < 0.97 else rng.randint(257, 2048)
        count = min(count, self.sectors)
        start = rng.randrange(0, self.sectors - count + 1)
        rng_range = range(start, start + count)
        if any(s in self.busy for s in rng_range):
            return None
        self.busy.update(rng_range)
        return start, count

    def connection(self, index):
        rng = random.Random(self.args.seed * 1000 + index)
        writer = self.args.writer_base + index
        h = nbd.NBD()
        try:
            h.connect_unix(self.args.socket)
        except nbd.Error as err:
            print(f"# connection {index}: {err}", file=sys.stderr)
            return
        inflight = [0]
        try:
            while time.monotonic() < self.deadline:
                while inflight[0] < self.args.depth:
                    if not self.issue(h, rng, writer, inflight):
                        break
                if inflight[0] == 0:
                    time.sleep(0.001)
                    continue
                h.poll(1000)
        except nbd.Error as err:
            print(f"# connection {index}: {err}", file=sys.stderr)
        finally:
            # Replies still owed are what the kill left in flight: their I lines stand alone.
            try:
                h.shutdown(nbd.SHUTDOWN_ABANDON_PENDING)
            except nbd.Error:
                pass

    def issue(self, h, rng, writer, inflight):
        r = rng.random()
        if r < 0.01:
            return self.flush(h, inflight)
        with self.lock:
            picked = self.pick(rng)
            if picked is None:
                return False
            start, count = picked
            if r < 0.08:
                return self.read(h, start, count, inflight)
            self.seq += 1
            seq = self.seq
            kind = "W" if r < 0.95 else "Z" if r < 0.98 else "T"
            self.emit(f"I {seq} {writer} {kind} {start} {count}")
        fua = nbd.CMD_FLAG_FUA if rng.random() < 0.05 else 0
        done = self.done_fn(seq, kind, start, count, inflight)
        inflight[0] += 1
        try:
            if kind == "W":
                data = bytearray()
                for s in range(start, start + count):
                    data += sector_bytes(s, seq, writer)
                h.aio_pwrite(bytes(data), start * SECTOR, completion=done, flags=fua)
            elif kind == "Z":
                h.aio_zero(count * SECTOR, start * SECTOR, completion=done, flags=fua)
            else:
                h.aio_trim(count * SECTOR, start * SECTOR, completion=done, flags=fua)
        except nbd.Error:
            inflight[0] -= 1
            raise
        return True

    def done_fn(self, seq, kind, start, count, inflight):
        def done(error):
            inflight[0] -= 1
            with self.lock:
                if error.value != 0:
                    # It may still land (the server got it before dying): its sectors stay
                    # locked for the rest of the run, so the model keeps one request per sector.
                    self.emit(f"E {seq} {error.value}")
                    return 1
                self.emit(f"A {seq}")
                value = seq if kind == "W" else 0
                for s in range(start, start + count):
                    self.model[s] = value
                self.busy.difference_update(range(start, start + count))
            return 1
        return done

    def flush(self, h, inflight):
        with self.lock:
            self.flushes += 1
            n = self.flushes
            # Issued after this line: every write acknowledged before it must reach the store.
            self.emit(f"FI {n}")

        def done(error):
            inflight[0] -= 1
            if error.value == 0:
                with self.lock:
                    self.emit(f"F {n}")
            return 1
        inflight[0] += 1
        try:
            h.aio_flush(completion=done)
        except nbd.Error:
            inflight[0] -= 1
            raise
        return True

    def read(self, h, start, count, inflight):
        """Under self.lock. Reads a locked range: it must be exactly this run's model."""
        buf = nbd.Buffer(count * SECTOR)
        expected = [self.model.get(s) for s in range(start, start + count)]

        def done(error):
            inflight[0] -= 1
            with self.lock:
                if error.value == 0:
                    data = buf.to_bytearray()
                    bad = check_range(data, start, expected)
                    self.emit(f"V read-back: {bad}" if bad else f"R {count}")
                self.busy.difference_update(range(start, start + count))
            return 1
        inflight[0] += 1
        try:
            h.aio_pread(buf, start * SECTOR, completion=done)
        except nbd.Error:
            inflight[0] -= 1
            self.busy.difference_update(range(start, start + count))
            raise
        return True

    def run(self):
        self.dump()
        threads = [threading.Thread(target=self.connection, args=(i,)) for i in range(self.args.conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.flush_out()

    def dump(self):
        """Reads the device into the dump file and takes its sectors as this run's model."""
        h = nbd.NBD()
        h.connect_unix(self.args.socket)
        step = 1 << 20
        with open(self.args.dump, "wb") as f:
            for off in range(0, self.args.size, step):
                data = h.pread(min(step, self.args.size - off), off)
                f.write(data)
                for i in range(0, len(data), SECTOR):
                    parsed = parse_sector(data[i : i + SECTOR])
                    # Only sectors the model can vouch for take part in read-backs.
                    if parsed == "zero":
                        self.model[(off + i) // SECTOR] = 0
                    elif parsed is not None and parsed[0] == (off + i) // SECTOR:
                        self.model[(off + i) // SECTOR] = parsed[1]
        h.shutdown()
        print("D", flush=True)


def check_range(data, start, expected):
    for i, want in enumerate(expected):
        if want is None:
            continue
        got = parse_sector(bytes(data[i * SECTOR : (i + 1) * SECTOR]))
        if want == 0 and got != "zero":
            return f"sector {start + i}: expected zeros, got {got}"
        if want != 0 and (got is None or got == "zero" or got[0] != start + i or got[1] != want):
            return f"sector {start + i}: expected seq {want}, got {got}"
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--socket", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--dump", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--seq-start", type=int, required=True)
    p.add_argument("--writer-base", type=int, required=True)
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--depth", type=int, default=16)
    p.add_argument("--duration", type=float, default=3600)
    args = p.parse_args()
    Writer(args).run()


if __name__ == "__main__":
    main()
