// The S3 servers the integration tests run against: two independent implementations that
// users run, MinIO (test/helpers/minio.ts) and Ceph's RADOS Gateway (test/helpers/ceph.ts),
// so that the gateway is never tuned to one server's reading of the S3 API. A test file
// that takes this list runs every case once per server, each against its own instance.
//
// S3NBD_TEST_S3_SERVERS=minio (or ceph) runs only that one, for a quicker loop while
// developing; CI leaves it unset, and a server that cannot start fails the tests. With
// S3NBD_TEST_S3_ENDPOINT set, the MinIO entry is that server instead (see minio.ts).

import { startCeph } from './ceph.ts';
import { type S3TestServer, startMinio } from './minio.ts';

export interface S3ServerKind {
  /** For test names: "MinIO", "Ceph RGW". */
  readonly name: string;
  start(): Promise<S3TestServer>;
}

const ALL: readonly S3ServerKind[] = [
  { name: 'MinIO', start: startMinio },
  { name: 'Ceph RGW', start: startCeph },
];

export const S3_SERVERS: readonly S3ServerKind[] = selected(process.env.S3NBD_TEST_S3_SERVERS);

function selected(spec: string | undefined): readonly S3ServerKind[] {
  if (spec === undefined || spec.trim() === '') return ALL;
  const wanted = spec.split(',').map((s) => s.trim().toLowerCase()).filter((s) => s !== '');
  const servers = ALL.filter((s) => wanted.includes(s.name.split(' ')[0]!.toLowerCase()));
  if (servers.length !== wanted.length) {
    throw new Error(`S3NBD_TEST_S3_SERVERS="${spec}": name servers from ${ALL.map((s) => s.name.split(' ')[0]!.toLowerCase()).join(', ')}`);
  }
  return servers;
}
