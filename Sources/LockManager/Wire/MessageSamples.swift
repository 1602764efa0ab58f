extension WireMessage {
    /// One message of every type, with every optional part present somewhere: the round-trip
    /// tests, the malformed-frame tests and the fuzzer's seed corpus start from these.
    public static let samples: [WireMessage] = [
        .welcome(epoch: 9, recovering: true),
        .request(LockID(node: 3, serial: 9), process: 4, resource: "vhd/é", mode: .pw, flags: .noQueue, timeoutMillis: 7, epoch: 12),
        .convert(LockID(node: 1, serial: 2), mode: .nl, flags: .convDeadlock, timeoutMillis: 0, valueBlock: [1, 2], epoch: 3),
        .unlock(LockID(node: 1, serial: 2), valueBlock: nil, epoch: 3),
        .cancel(LockID(node: 1, serial: 5)),
        .recover(LockID(node: 2, serial: 1), process: 0, resource: "r", mode: .cr, valueBlock: ValueBlock(bytes: [8]), epoch: 4),
        .recoverDone(epoch: 4),
        .list,
        .granted(LockID(node: 1, serial: 2), mode: .ex, valueBlock: ValueBlock(bytes: [5], valid: false)),
        .refused(LockID(node: 1, serial: 2), error: .staleEpoch(current: 77)),
        .refused(LockID(node: 1, serial: 3), error: .limitReached("node 1 has 5 locks (limit 5)")),
        .blocking(LockID(node: 1, serial: 2), blocked: .pr),
        .released(LockID(node: 1, serial: 2)),
        .listing("epoch 1 members [1]\nresource r lvb[]\n", more: true),
        .failure("unexpected message"),
        .demoted(LockID(node: 5, serial: 6)),
    ]
}
