#if canImport(Glibc)
import Glibc
#endif
import VHDFormatExercise

/// One scratch directory per fuzzing process, emptied by the exercise before each input; inside
/// $VHD_FUZZ_SCRATCH when set (run.sh sets it and removes it afterwards), else in /dev/shm.
private let scratchDirectory: String = {
    var base = "/dev/shm"
    if let configured = getenv("VHD_FUZZ_SCRATCH") { base = String(cString: configured) }
    var template = Array("\(base)/vhd-fuzz-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { fatalError("cannot make a scratch directory in /dev/shm") }
    return String(cString: made)
}()

/// Any failure other than a VHDError (or data read back wrong) is a finding: abort so libFuzzer saves the input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let failures = ImageExercise.run(Array(UnsafeBufferPointer(start: data, count: size)), in: scratchDirectory).failures
    if !failures.isEmpty {
        // abort() does not flush stdout.
        print("vhd-fuzz: " + failures.joined(separator: "\nvhd-fuzz: "))
        fflush(nil)
        abort()
    }
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
private func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> CInt

/// SwiftPM links an executable's entry point under the module's own name instead of `main`, so the
/// libFuzzer driver is started from here.
@_cdecl("vhd_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    var count = argc
    var arguments: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
    return runFuzzerDriver(&count, &arguments) { data, size in fuzzOneInput(data, size) }
}
