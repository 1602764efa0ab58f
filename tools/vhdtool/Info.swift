import ArgumentParser
import Foundation
import VHDFormat

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show an image's facts and its parent chain.")

    @Flag(help: "Print JSON (one object per image of the chain, the opened one first).") var json = false
    @Flag(name: .customLong("ignore-parent-identity"), help: "Accept a parent whose identity does not match.") var allowMismatch = false
    @Argument(help: "The image file.") var file: String

    func run() throws {
        let chain: [DiskFacts] = try reportingErrors {
            let disk = try VirtualDisk.open(file, options: .init(allowParentMismatch: allowMismatch, topOnly: false))
            return disk.chain
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(chain), as: UTF8.self))
            return
        }
        for (depth, facts) in chain.enumerated() {
            if depth > 0 { print("\nbacking file (depth \(depth)):") }
            print("image: \(facts.path)")
            print("file format: \(facts.format.rawValue)")
            print("disk type: \(facts.type.rawValue)")
            print("virtual size: \(facts.virtualSize) bytes")
            print("disk size: \(facts.fileSize) bytes")
            if facts.blockSize > 0 { print("block size: \(facts.blockSize)") }
            print("sector size: \(facts.logicalSectorSize) logical, \(facts.physicalSectorSize) physical")
            if !facts.creator.isEmpty { print("creator: \(facts.creator)") }
            if !facts.identity.isEmpty { print("identity: \(facts.identity)") }
            if let id = facts.diskIdentifier { print("disk id: \(id)") }
            if let g = facts.geometry { print("geometry (CHS): \(g.cylinders)/\(g.heads)/\(g.sectorsPerTrack) = \(g.byteCount) bytes") }
            if facts.logReplayed { print("log: replayed (in memory)") }
            if let parent = facts.parent {
                print("parent identity: \(parent.identity)")
                if let name = parent.name, !name.isEmpty { print("parent name: \(name)") }
                for locator in parent.locators { print("parent locator \(locator.kind): \(locator.path)") }
            }
        }
    }
}
