/** The CRIU checkpoint engine and its parts. */
export { CriuEngine, DEFAULT_CRIU_RATES, MANIFEST_FILE } from './criu-engine.js';
export type { CriuEngineOptions, CriuImageManifest, CriuRates } from './criu-engine.js';
export { locateCriu, parseCriuVersion, MIN_CRIU_MAJOR } from './criu-binary.js';
export type { CriuBinary, CriuLocation } from './criu-binary.js';
export { estimateImageBytes, estimateTree, processTree, taskState } from './proc.js';
export { listenForImageStreams, noAuthentication, tcpImageSink } from './transport.js';
export type { Authenticator, ImageStreamListener, TcpEndpoint } from './transport.js';
