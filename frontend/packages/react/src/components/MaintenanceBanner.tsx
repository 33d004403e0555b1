import { useState } from 'react';
import type { LiveState } from '../liveState.js';

/** A banner for the latest `system.maintenance` notice, unless it says it is over. */
export function MaintenanceBanner({ live }: { live: LiveState }) {
  const [hidden, setHidden] = useState<string | null>(null);
  const m = live.maintenance;
  if (!m || hidden === m.timestamp) return null;
  const d = m.data;
  if (d['active'] === false || d['status'] === 'completed' || d['status'] === 'ended') return null;
  const title = typeof d['title'] === 'string' ? d['title'] : 'Scheduled maintenance';
  const message = typeof d['message'] === 'string' ? d['message'] : null;
  const window = [d['starts_at'] ?? d['start'], d['ends_at'] ?? d['end']].filter((x) => typeof x === 'string').join(' → ');
  return (
    <div className="banner banner--maintenance" role="status" data-testid="maintenance-banner">
      <strong>{title}</strong>
      {message && <span>{message}</span>}
      {window && <span className="banner__window">{window}</span>}
      <button type="button" className="banner__close" aria-label="Hide" onClick={() => setHidden(m.timestamp)}>
        ×
      </button>
    </div>
  );
}
