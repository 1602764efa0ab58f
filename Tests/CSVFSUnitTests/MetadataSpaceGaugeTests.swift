@testable import CSVFS
import Testing

@Suite struct MetadataSpaceGaugeTests {
    @Test func measuresEveryIntervalWhilePlentyIsLeftAndEveryTimeWhenNot() throws {
        var gauge = MetadataSpaceGauge()
        var measured = 0
        var left = MetadataSpaceGauge.plentyOfSpace * 2
        let measure = { () throws(Errno) -> Int64 in
            measured += 1
            return left
        }
        for _ in 0...MetadataSpaceGauge.checkInterval { try gauge.require(measure: measure) }
        #expect(measured == 1, "one measurement for the first \(MetadataSpaceGauge.checkInterval + 1) operations")
        try gauge.require(measure: measure)
        #expect(measured == 2)

        left = MetadataSpaceGauge.plentyOfSpace
        for _ in 0..<MetadataSpaceGauge.checkInterval { try gauge.require(measure: measure) }
        #expect(measured == 2, "the change is seen at the next measurement")
        try gauge.require(measure: measure)
        try gauge.require(measure: measure)
        try gauge.require(measure: measure)
        #expect(measured == 5, "near the limit every operation measures")
        left = 0
        #expect(throws: Errno.noSpace) { try gauge.require(measure: measure) }
    }
}
