/** An event's details on demand: its id and the W3C traceparent that finds it in traces. */
export function EventDetails({ id, traceparent }: { id: string; traceparent: string | null }) {
  const traceId = traceparent?.split('-')[1] ?? null;
  return (
    <details className="event-details" data-testid="event-details">
      <summary>details</summary>
      <dl>
        <dt>event id</dt>
        <dd>
          <code>{id.split('#')[0]}</code>
        </dd>
        <dt>traceparent</dt>
        <dd>
          {traceparent ? (
            <code data-testid="traceparent" title={traceId ? `trace id ${traceId}` : undefined}>
              {traceparent}
            </code>
          ) : (
            <span className="event-details__none">not traced</span>
          )}
        </dd>
      </dl>
    </details>
  );
}
