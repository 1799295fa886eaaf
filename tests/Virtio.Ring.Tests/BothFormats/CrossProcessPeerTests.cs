using System;
using System.Diagnostics;
using System.IO;
using System.Reflection;
using System.Text;

namespace Virtio.Ring.Tests.BothFormats;

/// <summary>
/// Our driver and our device in two processes over a shared-memory file, exactly as either would pair with an
/// implementation written by someone else (benchmarks/Virtio.PingPong, <c>peer</c> mode).
/// </summary>
public class CrossProcessPeerTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(90);

    [Theory]
    [InlineData("--ring split --segments 3 --features EVENT_IDX,INDIRECT_DESC")]
    [InlineData("--ring split --legacy --segments 2 --features EVENT_IDX --gpa-base 0x100000000")]
    [InlineData("--ring packed --segments 4 --features EVENT_IDX,INDIRECT_DESC,IN_ORDER")]
    [InlineData("--ring packed --qsize 255 --segments 5 --out-bytes 100 --in-bytes 60")]
    public void Driver_and_device_in_two_processes_exchange_every_buffer_intact(string options) =>
        RunPair(options, 20000, ring => ring);

    [Theory]
    [InlineData("split", "features=none")]
    [InlineData("packed", "features=none")]
    [InlineData("split", "features=")]
    [InlineData("packed", "features=")]
    public void A_RING_line_that_negotiates_no_feature_is_served(string format, string featuresField) =>
        // Another implementation's driver wrote "features=none" (or nothing) when it negotiated no ring feature.
        RunPair($"--ring {format} --features none", 5000, ring =>
        {
            Assert.Contains(" features=none ", ring, StringComparison.Ordinal);
            return ring.Replace("features=none", featuresField, StringComparison.Ordinal);
        });

    [Theory]
    [InlineData("split")]
    [InlineData("packed")]
    public void The_device_survives_a_peer_that_writes_garbage(string format)
    {
        string file = Path.Combine(Path.GetTempPath(), $"virtio-garbage-{Guid.NewGuid():N}.bin");
        try
        {
            byte[] garbage = new byte[64 * 1024];
            new Random(format.Length).NextBytes(garbage);
            if (format == "split")
            {
                garbage[0x2002] = 0x00; // avail idx 0x4000: more than the queue size ahead
                garbage[0x2003] = 0x40;
            }
            else
            {
                garbage[0x100E] = 0x80; // slot 0 flags: AVAIL only, so the device starts reading garbage
                garbage[0x100F] = 0x00;
            }

            File.WriteAllBytes(file, garbage);
            string ring = format == "split"
                ? $"RING split qsize=256 desc=0x1000 driver=0x2000 device=0x3000 features=EVENT_IDX,INDIRECT_DESC gpa_base=0x0 size={garbage.Length} file={file}"
                : $"RING packed qsize=256 desc=0x1000 driver=0x2000 device=0x2004 features=EVENT_IDX,INDIRECT_DESC gpa_base=0x0 size={garbage.Length} file={file}";
            using Process device = Start($"peer device {ring} --timeout 10");
            string output = Finish(device);
            Assert.True(device.ExitCode == 3, output);
            Assert.Contains("BROKEN error=", output, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(file);
        }
    }

    private static Process Start(string arguments)
    {
        var info = new ProcessStartInfo("dotnet", $"\"{PeerPath()}\" {arguments}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        return Process.Start(info) ?? throw new InvalidOperationException("could not start the peer");
    }

    /// <summary>Starts our driver with <paramref name="driverOptions"/>, hands its RING line (through <paramref name="ring"/>) to our device, and checks both ends.</summary>
    private static void RunPair(string driverOptions, int count, Func<string, string> ring)
    {
        string file = Path.Combine(Path.GetTempPath(), $"virtio-peer-{Guid.NewGuid():N}.bin");
        try
        {
            using Process driver = Start($"peer driver {driverOptions} --count {count} --timeout 60 --file {file}");
            string? line = ReadLine(driver);
            Assert.NotNull(line);
            Assert.StartsWith("RING ", line, StringComparison.Ordinal);
            Assert.Contains($"file={file}", line, StringComparison.Ordinal);

            using Process device = Start($"peer device {ring(line)} --count {count} --timeout 60");
            string deviceOut = Finish(device);
            string driverOut = Finish(driver);
            Assert.True(device.ExitCode == 0, deviceOut);
            Assert.True(driver.ExitCode == 0, driverOut);
            Assert.Contains($"DONE count={count} errors=0", driverOut, StringComparison.Ordinal);
            Assert.Contains($"SERVED count={count}", deviceOut, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(file);
        }
    }

    private static string? ReadLine(Process process)
    {
        var read = process.StandardOutput.ReadLineAsync();
        return read.Wait(Bound) ? read.Result : null;
    }

    private static string Finish(Process process)
    {
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(Bound))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail("the peer did not finish in time");
        }

        return new StringBuilder().Append(output.Result).Append(errors.Result).ToString();
    }

    /// <summary>The peer program, built beside the tests (same configuration) by the project reference.</summary>
    private static string PeerPath()
    {
        string here = Path.GetDirectoryName(Assembly.GetExecutingAssembly().Location)!;
        string[] parts = here.Split(Path.DirectorySeparatorChar);
        int bin = Array.LastIndexOf(parts, "bin");
        string configuration = parts[bin + 1];
        string root = here;
        while (!File.Exists(Path.Combine(root, "Perf.sln")))
        {
            root = Path.GetDirectoryName(root) ?? throw new InvalidOperationException("Perf.sln not found above the tests");
        }

        string path = Path.Combine(root, "benchmarks", "Virtio.PingPong", "bin", configuration, "net10.0", "Virtio.PingPong.dll");
        Assert.True(File.Exists(path), $"{path} is built by the tests' project reference");
        return path;
    }
}
