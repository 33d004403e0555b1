import { useCallback, useEffect, useLayoutEffect, useRef, useState, type ReactNode } from 'react';

export interface VirtualListProps {
  count: number;
  rowHeight: number;
  height: number;
  renderRow: (index: number) => ReactNode;
  /** Keep the view pinned to the newest row. */
  follow: boolean;
  /** Called when the person scrolls away from (false) or back to (true) the bottom. */
  onFollowChange?: (follow: boolean) => void;
  overscan?: number;
  className?: string;
}

/** A fixed-row-height windowed list: only the visible rows (plus overscan) are in the DOM. */
export function VirtualList({
  count,
  rowHeight,
  height,
  renderRow,
  follow,
  onFollowChange,
  overscan = 10,
  className,
}: VirtualListProps) {
  const ref = useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const programmatic = useRef(false);
  const total = count * rowHeight;

  useLayoutEffect(() => {
    const el = ref.current;
    if (!el || !follow) return;
    const bottom = Math.max(0, total - el.clientHeight);
    if (Math.abs(el.scrollTop - bottom) > 1) {
      programmatic.current = true;
      el.scrollTop = bottom;
    }
    setScrollTop(el.scrollTop);
  }, [follow, total]);

  const onScroll = useCallback(() => {
    const el = ref.current;
    if (!el) return;
    setScrollTop(el.scrollTop);
    if (programmatic.current) {
      programmatic.current = false;
      return;
    }
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight <= rowHeight * 1.5;
    onFollowChange?.(atBottom);
  }, [onFollowChange, rowHeight]);

  useEffect(() => {
    // a wheel or key going up pauses follow even before a scroll event lands
    const el = ref.current;
    if (!el) return;
    const onWheel = (e: WheelEvent) => {
      if (e.deltaY < 0) onFollowChange?.(false);
    };
    el.addEventListener('wheel', onWheel, { passive: true });
    return () => el.removeEventListener('wheel', onWheel);
  }, [onFollowChange]);

  const first = Math.max(0, Math.floor(scrollTop / rowHeight) - overscan);
  const last = Math.min(count, Math.ceil((scrollTop + height) / rowHeight) + overscan);
  const rows: ReactNode[] = [];
  for (let i = first; i < last; i++) {
    rows.push(
      <div key={i} className="vlist__row" style={{ top: i * rowHeight, height: rowHeight }}>
        {renderRow(i)}
      </div>,
    );
  }

  return (
    <div ref={ref} className={`vlist ${className ?? ''}`} style={{ height }} onScroll={onScroll} tabIndex={0}>
      <div className="vlist__spacer" style={{ height: total }}>
        {rows}
      </div>
    </div>
  );
}
