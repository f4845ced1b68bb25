import { pino, type Logger as PinoLogger, type Level } from 'pino';

export type Logger = PinoLogger;
export type LogLevel = Level | 'silent';

/**
 * JSON logs on stderr (stdout stays free for command output such as `spotwatch parse`).
 */
export function createLogger(options: { level?: LogLevel; name?: string } = {}): Logger {
  return pino(
    {
      name: options.name ?? 'spotwatch',
      level: options.level ?? 'info',
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}

export const silentLogger: Logger = pino({ level: 'silent' });
