// current_time: the date and time now in an IANA time zone.
import { definePlugin, ToolInputError } from './contract';

export function formatInZone(now: Date, timeZone: string) {
  let parts: Intl.DateTimeFormatPart[];
  try {
    parts = new Intl.DateTimeFormat('en-CA', {
      timeZone,
      year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit',
      hourCycle: 'h23', weekday: 'long', timeZoneName: 'longOffset',
    }).formatToParts(now);
  } catch {
    throw new ToolInputError(`timeZone: unknown IANA time zone "${timeZone}" (e.g. "Europe/Paris", "Asia/Shanghai", "UTC")`);
  }
  const get = (t: Intl.DateTimeFormatPartTypes) => parts.find((p) => p.type === t)?.value ?? '';
  const offset = get('timeZoneName').replace(/^GMT/, '') || '+00:00';
  return {
    timeZone,
    date: `${get('year')}-${get('month')}-${get('day')}`,
    time: `${get('hour')}:${get('minute')}:${get('second')}`,
    weekday: get('weekday'),
    utcOffset: offset,
    iso: `${get('year')}-${get('month')}-${get('day')}T${get('hour')}:${get('minute')}:${get('second')}${offset}`,
    unixMs: now.getTime(),
  };
}

export function currentTime(now: () => Date = () => new Date()) {
  return definePlugin<{ timeZone: string }>({
    name: 'current_time',
    description: 'The current date, time, weekday and UTC offset in an IANA time zone.',
    parameters: {
      type: 'object',
      properties: {
        timeZone: { type: 'string', minLength: 1, maxLength: 64, default: 'UTC', description: 'IANA time zone, e.g. "Europe/Paris", "Asia/Shanghai", "UTC".' },
      },
      additionalProperties: false,
    },
    rateLimit: { maxConcurrent: 200, maxPerMinute: 3_000, timeoutMs: 1_000 },
    // The answer changes every second: nothing to cache.
    cache: { enabled: false, ttlSeconds: 0, keyStrategy: 'params' },
    async execute({ timeZone }) {
      return formatInZone(now(), timeZone);
    },
    async fallback() {
      return undefined;
    },
  });
}
