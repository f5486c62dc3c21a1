import { ToolInputError } from './contract';
import { formatInZone } from './current-time';

it('formats a moment in an IANA time zone and refuses unknown zones', () => {
  const now = new Date('2025-01-15T12:34:56Z');
  expect(formatInZone(now, 'Asia/Shanghai')).toMatchObject({ date: '2025-01-15', time: '20:34:56', utcOffset: '+08:00', weekday: 'Wednesday', iso: '2025-01-15T20:34:56+08:00' });
  expect(formatInZone(now, 'UTC')).toMatchObject({ time: '12:34:56', utcOffset: '+00:00' });
  expect(() => formatInZone(now, 'Mars/Olympus')).toThrow(ToolInputError);
});
