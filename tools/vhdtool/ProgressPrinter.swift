import Foundation

/// Prints "(NN.N/100%)" on standard error as qemu-img -p does, only when the percentage moves.
final class ProgressPrinter {
    private var lastShown = -1

    func update(_ done: UInt64, _ total: UInt64) {
        let permille = total == 0 ? 1000 : Int(done * 1000 / total)
        guard permille != lastShown else { return }
        lastShown = permille
        var text = "    (\(permille / 10).\(permille % 10)/100%)\r"
        if done >= total { text += "\n" }
        FileHandle.standardError.write(Data(text.utf8))
    }
}
