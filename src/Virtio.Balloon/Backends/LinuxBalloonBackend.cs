using System;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using Virtio.Ring;

namespace Virtio.Balloon.Backends;

/// <summary>
/// The back end a Linux VMM uses: ballooned pages are returned to the host kernel, so the guest's memory stops
/// costing host RAM. Private anonymous memory is released with <c>madvise(MADV_DONTNEED)</c>, shared memory
/// (memfd, shmem, hugetlbfs) with <c>madvise(MADV_REMOVE)</c> (a hole punched in the backing file). Host pages
/// larger than 4 KiB (2 MiB huge pages) are released only once every 4 KiB piece of them is in the balloon
/// (<see cref="HostPageCoalescer"/>). Deflate optionally pre-faults the pages (<c>MADV_POPULATE_WRITE</c>, Linux
/// 5.14+, else <c>MADV_WILLNEED</c>) so the guest does not take the faults. Reported free pages are released the
/// same way unless their contents must be kept (poison).
/// </summary>
[SupportedOSPlatform("linux")]
public sealed unsafe partial class LinuxBalloonBackend : IBalloonBackend
{
    private const int MadvWillNeed = 3;
    private const int MadvDontNeed = 4;
    private const int MadvRemove = 9;
    private const int MadvPopulateWrite = 23;

    private readonly GuestMemory _memory;
    private readonly HostMemoryBacking _backing;
    private readonly HostPageCoalescer? _coalescer;
    private readonly bool _prefault;
    private bool _populateWriteUnsupported;

    /// <summary>Releases pages of <paramref name="memory"/>, which is backed as <paramref name="backing"/> in host pages of <paramref name="hostPageSize"/> bytes.</summary>
    public LinuxBalloonBackend(GuestMemory memory, HostMemoryBacking backing, ulong hostPageSize = 4096, bool prefaultOnDeflate = false)
    {
        ArgumentNullException.ThrowIfNull(memory);
        _memory = memory;
        _backing = backing;
        _prefault = prefaultOnDeflate;
        _coalescer = hostPageSize > 4096 ? new HostPageCoalescer(hostPageSize) : null;
        HostPageSize = hostPageSize;
    }

    /// <summary>The host page size releases are made in.</summary>
    public ulong HostPageSize { get; }

    /// <summary>Bytes released to the host so far.</summary>
    public long ReleasedBytes { get; private set; }

    /// <summary>madvise calls that failed (errno in <see cref="LastError"/>); the pages then simply stay resident.</summary>
    public long FailedReleases { get; private set; }

    /// <summary>The errno of the last failed madvise, or 0.</summary>
    public int LastError { get; private set; }

    /// <inheritdoc/>
    public void Inflate(ReadOnlySpan<GuestPageRange> ranges)
    {
        foreach (GuestPageRange range in ranges)
        {
            if (_coalescer is null)
            {
                Release(this, range);
            }
            else
            {
                _coalescer.Inflate(range, this, Release);
            }
        }
    }

    /// <inheritdoc/>
    public void Deflate(ReadOnlySpan<GuestPageRange> ranges)
    {
        foreach (GuestPageRange range in ranges)
        {
            _coalescer?.Deflate(range);
            if (_prefault)
            {
                Prefault(range);
            }
        }
    }

    /// <inheritdoc/>
    public void Report(ReadOnlySpan<GuestPageRange> ranges, bool preserveContents)
    {
        if (preserveContents)
        {
            return; // a discard reads back zeros, which would lose the guest's poison pattern
        }

        foreach (GuestPageRange range in ranges)
        {
            // Reported pages are free, not ballooned: release only whole host pages inside the range.
            ulong per = HostPageSize / 4096;
            ulong first = (range.FirstPfn + per - 1) / per * per;
            ulong end = range.EndPfn / per * per;
            if (end > first)
            {
                Release(this, new GuestPageRange(first, end - first));
            }
        }
    }

    /// <inheritdoc/>
    public void Reset() => _coalescer?.Clear();

    private static void Release(LinuxBalloonBackend self, GuestPageRange range) =>
        self.Advise(range, self._backing == HostMemoryBacking.Shared ? MadvRemove : MadvDontNeed, count: true);

    private void Prefault(GuestPageRange range)
    {
        if (!_populateWriteUnsupported && !Advise(range, MadvPopulateWrite, count: false))
        {
            _populateWriteUnsupported = LastError == 22; // EINVAL: kernel older than 5.14
            Advise(range, MadvWillNeed, count: false);
        }
    }

    /// <summary>madvise over a run, region by region (a run may span two adjacent regions).</summary>
    private bool Advise(GuestPageRange range, int advice, bool count)
    {
        bool ok = true;
        ulong gpa = range.Address;
        ulong end = gpa + range.Length;
        while (gpa < end)
        {
            if (!_memory.TryFindRegion(gpa, out Virtio.Ring.Memory.GuestRegion region, out _))
            {
                return false; // validated by the device; a region can only be missing after a VMM change
            }

            ulong chunk = Math.Min(end - gpa, region.Length - region.OffsetOf(gpa));
            if (Madvise(region.Host + region.OffsetOf(gpa), (nuint)chunk, advice) != 0)
            {
                LastError = Marshal.GetLastPInvokeError();
                FailedReleases += count ? 1 : 0;
                ok = false;
            }
            else if (count)
            {
                ReleasedBytes += (long)chunk;
            }

            gpa += chunk;
        }

        return ok;
    }

    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static partial int Madvise(byte* address, nuint length, int advice);
}
