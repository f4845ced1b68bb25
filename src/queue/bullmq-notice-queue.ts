import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { SpotwatchError } from '../errors.js';
import type { Notice } from '../notice.js';
import { episodeNoticeId, episodeRule } from '../notice-episodes.js';
import { EPISODE_SCRIPT } from './episode-script.js';
import { NOTICES_QUEUE_NAME, type EnqueueOutcome, type NoticeQueue, type StoredNotice } from './notice-queue.js';

export interface BullmqNoticeQueueOptions {
  redisUrl: string;
  prefix?: string;
  /** How long one enqueue may take before it is treated as "Redis unreachable". */
  commandTimeoutMs?: number;
}

/** How long finished notice jobs stay in Redis; this is also the window in which a re-seen notice is a no-op. */
const KEEP_COMPLETED_SECONDS = 24 * 3600;
const KEEP_FAILED_SECONDS = 7 * 24 * 3600;
/**
 * How long an id's episode record outlives its last store: longer than any of its jobs is kept, so a repeat of
 * an episode always finds the record (without one the record is rebuilt from the jobs, see episode-script.ts).
 */
const KEEP_EPISODES_SECONDS = KEEP_FAILED_SECONDS + 24 * 3600;

interface EpisodeCommand {
  spotwatchEpisode(numKeys: number, ...args: string[]): Promise<[number, number, number]>;
}

/**
 * The notices queue on BullMQ. The Redis connection fails fast (no offline queue, bounded retries) so that
 * a caller can spool a notice instead of waiting on a Redis that is gone.
 *
 * Job id = notice id, except for notices whose id recurs across interruptions of the same instance
 * (`episodeRule`): those are stored per episode, `<id>~<n>` from the second episode on, decided by one Lua
 * script against the episode record in Redis (`<prefix>:sw:episodes:<id>`).
 */
export class BullmqNoticeQueue implements NoticeQueue {
  private readonly connection: Redis;
  private readonly queue: Queue;
  private readonly prefix: string;
  private readonly commandTimeoutMs: number;

  constructor(options: BullmqNoticeQueueOptions) {
    this.prefix = options.prefix ?? 'bull';
    this.commandTimeoutMs = options.commandTimeoutMs ?? 1000;
    this.connection = new Redis(options.redisUrl, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 2000,
      lazyConnect: false,
      // Keep trying to reconnect in the background, at most every 2 s.
      retryStrategy: (times) => Math.min(100 * times, 2000),
    });
    // Connection errors are reported through enqueue()/ping() results; an unhandled 'error' event would crash.
    this.connection.on('error', () => {});
    this.connection.defineCommand('spotwatchEpisode', { lua: EPISODE_SCRIPT });
    this.queue = new Queue(NOTICES_QUEUE_NAME, {
      connection: this.connection,
      prefix: this.prefix,
      defaultJobOptions: {
        removeOnComplete: { age: KEEP_COMPLETED_SECONDS },
        removeOnFail: { age: KEEP_FAILED_SECONDS },
        // Planning is idempotent per notice, so a planner that hit a passing Redis or registry error simply
        // plans again: 0.2, 0.4, 0.8, 1.6 s later — well inside any notice window.
        attempts: 5,
        backoff: { type: 'exponential', delay: 200 },
      },
    });
    this.queue.on('error', () => {});
  }

  async enqueue(notice: Notice): Promise<EnqueueOutcome> {
    return (await this.store(notice)).outcome;
  }

  async store(notice: Notice): Promise<StoredNotice> {
    return withTimeout(this.commandTimeoutMs, async (timedOut) => {
      await this.connected();
      // Past the timeout the caller has already reported the notice as not stored (spooled, or answered 503):
      // it must not land now behind the caller's back.
      const stillInTime = () => {
        if (timedOut()) throw new SpotwatchError('REDIS_UNAVAILABLE', 'Redis came back after the enqueue had timed out');
      };
      stillInTime();
      let episode = 1;
      let newEpisode = false;
      const rule = episodeRule(notice);
      if (rule) {
        const [found, latest, opened] = await (this.connection as unknown as EpisodeCommand).spotwatchEpisode(
          1,
          `${this.prefix}:sw:episodes:${notice.id}`,
          `${this.prefix}:${NOTICES_QUEUE_NAME}:`,
          notice.id,
          notice.deadline ? String(Date.parse(notice.deadline)) : '',
          String(rule.gapMs),
          String(KEEP_EPISODES_SECONDS),
        );
        if (found === 0) return { outcome: 'stale', id: notice.id, episode: 0, newEpisode: false };
        // A repeat of an episode that a later one has followed: that interruption is over, whether or not its
        // job is still kept; storing it again would re-plan a node that has since come back.
        if (found < latest) return { outcome: 'duplicate', id: episodeNoticeId(notice.id, found), episode: found, newEpisode: false };
        episode = found;
        newEpisode = opened === 1;
      }
      // A crash between the script and the add leaves the episode recorded without its job: the notice's
      // redelivery (spool, IMDS poll, webhook retry) finds the same episode and adds the job then.
      const id = episodeNoticeId(notice.id, episode);
      const stored: Notice = id === notice.id ? notice : { ...notice, id };
      const key = `${this.prefix}:${NOTICES_QUEUE_NAME}:${id}`;
      // Only for the outcome label: BullMQ's add is itself a no-op for an existing job id.
      const existed = (await this.connection.exists(key)) === 1;
      stillInTime();
      await this.queue.add(stored.kind, stored, { jobId: id });
      return { outcome: existed ? 'duplicate' : 'created', id, episode, newEpisode };
    });
  }

  /** Waits for a connection being (re)established; the caller's timeout bounds the wait. */
  private async connected(): Promise<void> {
    if (this.connection.status === 'ready') return;
    if (this.connection.status === 'end') throw new SpotwatchError('REDIS_UNAVAILABLE', 'the Redis connection was closed');
    // One shared wait, however many notices arrive while Redis is away.
    this.readyWait ??= new Promise<void>((resolve) =>
      this.connection.once('ready', () => {
        this.readyWait = undefined;
        resolve();
      }),
    );
    await this.readyWait;
  }

  private readyWait: Promise<void> | undefined;

  async ping(): Promise<boolean> {
    try {
      return (await withTimeout(this.commandTimeoutMs, () => this.connection.ping())) === 'PONG';
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    await this.queue.close().catch(() => {});
    this.connection.disconnect();
  }
}

async function withTimeout<T>(ms: number, run: (timedOut: () => boolean) => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let expired = false;
  try {
    return await Promise.race([
      run(() => expired),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          expired = true;
          reject(new SpotwatchError('REDIS_UNAVAILABLE', `Redis did not answer within ${ms} ms`));
        }, ms);
      }),
    ]);
  } catch (err) {
    if (err instanceof SpotwatchError) throw err;
    throw new SpotwatchError('REDIS_UNAVAILABLE', `Redis is unreachable: ${err instanceof Error ? err.message : String(err)}; the notice is kept in the spool`, { cause: err });
  } finally {
    if (timer) clearTimeout(timer);
  }
}
