// grpc-health-check's copy of grpc/health/v1/health.proto, found without loading the package: it
// parses the proto when it is loaded, ~0.1 s of a process's start, which the edge (a health client
// of its peers, no gRPC server) need not pay.
import path from 'node:path';

export const HEALTH_PROTO_PATH = path.join(path.dirname(require.resolve('grpc-health-check/package.json')), 'proto/health/v1/health.proto');
