// The order states of docs/contracts.md (ranks in that order) and what the page
// needs to know about them.

export const STATES = [
  'CREATED', 'INVENTORY_RESERVED', 'PAYMENT_AUTHORIZED', 'DELIVERY_WAITING',
  'DELIVERY_ASSIGNED', 'PICKED_UP', 'DELIVERED', 'INVENTORY_REJECTED',
  'PAYMENT_FAILED', 'CANCELLED',
];

export const END_STATES = new Set(['DELIVERED', 'INVENTORY_REJECTED', 'PAYMENT_FAILED', 'CANCELLED']);

// A cancel may be asked up to DELIVERY_ASSIGNED (docs/contracts.md#cancellation).
const CANCELLABLE = new Set([
  'CREATED', 'INVENTORY_RESERVED', 'PAYMENT_AUTHORIZED', 'DELIVERY_WAITING', 'DELIVERY_ASSIGNED',
]);

export function cancellable(status) {
  return CANCELLABLE.has(status);
}

export function isEnd(status) {
  return END_STATES.has(status);
}
