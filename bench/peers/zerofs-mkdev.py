#!/usr/bin/python3
"""Creates ZeroFS's NBD device file /.nbd/NAME of SIZE bytes through ZeroFS's 9P server.

usage: zerofs-mkdev.py 9P_UNIX_SOCKET NAME SIZE

ZeroFS exports every regular file in /.nbd as an NBD export of that name; its README creates
them with `truncate -s SIZE /mnt/zerofs/.nbd/NAME` on an NFS or 9P mount. This machine's kernel
has neither client (no nfs/9p module), so this speaks just enough 9P2000.L itself: version,
attach, walk, lcreate, setattr(size), getattr, clunk. An existing device of the same size is
kept (a restart on the same volume); one of another size is an error.
"""
import socket
import struct
import sys

TVERSION, TATTACH, TWALK, TLCREATE, TGETATTR, TSETATTR, TCLUNK = 100, 104, 110, 14, 24, 26, 120
RLERROR = 7
NOFID = 0xFFFFFFFF
SETATTR_SIZE = 0x8
GETATTR_SIZE = 0x200


def s(text):
    data = text.encode()
    return struct.pack("<H", len(data)) + data


class Client:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)

    def call(self, mtype, body, tag=1):
        self.sock.sendall(struct.pack("<IBH", 7 + len(body), mtype, tag) + body)
        head = self._read(7)
        size, rtype, _ = struct.unpack("<IBH", head)
        payload = self._read(size - 7)
        if rtype == RLERROR:
            raise OSError(struct.unpack("<I", payload[:4])[0], f"9P request {mtype} failed")
        if rtype != mtype + 1:
            raise RuntimeError(f"9P: expected reply {mtype + 1}, got {rtype}")
        return payload

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise RuntimeError("9P: connection closed")
            buf += chunk
        return buf

    def walk(self, fid, newfid, *names):
        self.call(TWALK, struct.pack("<IIH", fid, newfid, len(names)) + b"".join(s(n) for n in names))

    def size(self, fid):
        reply = self.call(TGETATTR, struct.pack("<IQ", fid, GETATTR_SIZE))
        # valid[8] qid[13] mode[4] uid[4] gid[4] nlink[8] rdev[8] size[8] ...
        return struct.unpack_from("<Q", reply, 8 + 13 + 4 + 4 + 4 + 8 + 8)[0]


def main():
    path, name, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    c = Client(path)
    c.call(TVERSION, struct.pack("<I", 65536) + s("9P2000.L"), tag=0xFFFF)
    c.call(TATTACH, struct.pack("<II", 0, NOFID) + s("root") + s("") + struct.pack("<I", 0))
    try:
        c.walk(0, 2, ".nbd", name)  # fid 2: the existing device
        have = c.size(2)
        if have != size:
            sys.exit(f"zerofs-mkdev: /.nbd/{name} exists with size {have}, not {size}")
        print(f"/.nbd/{name} exists ({size} bytes)", file=sys.stderr)
        return
    except OSError:
        pass
    c.walk(0, 1, ".nbd")  # fid 1: the directory, which lcreate turns into the new file
    c.call(TLCREATE, struct.pack("<I", 1) + s(name) + struct.pack("<III", 0o2 | 0o100, 0o600, 0))
    c.call(TSETATTR, struct.pack("<III", 1, SETATTR_SIZE, 0) + struct.pack("<II", 0, 0)
           + struct.pack("<Q", size) + bytes(32))
    got = c.size(1)
    c.call(TCLUNK, struct.pack("<I", 1))
    if got != size:
        sys.exit(f"zerofs-mkdev: created /.nbd/{name} but its size is {got}, not {size}")
    print(f"created /.nbd/{name} ({size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
