namespace Virtio.Balloon.Hints;

/// <summary>
/// The values of <c>free_page_hint_cmd_id</c> (VIRTIO 1.2, 5.5.4 and 5.5.6.5): STOP and DONE are commands, every
/// other value is the id of a requested report.
/// </summary>
public static class FreePageHintCommand
{
    /// <summary>No report wanted now; sent by the driver at the end of a report (and, in the original patch, the whole stop command is <c>{0, 0}</c>).</summary>
    public const uint Stop = 0;

    /// <summary>The device is finished with the hints: the driver may give every hinted block back to its allocator.</summary>
    public const uint Done = 1;

    /// <summary>The smallest report id.</summary>
    public const uint FirstReportId = 2;

    /// <summary>Bytes of the standard protocol's command buffer (a le32 id).</summary>
    public const int StandardCommandBytes = 4;

    /// <summary>Bytes of the hint-array protocol's command buffer (<c>{le32 id, le32 block size}</c>).</summary>
    public const int ArrayCommandBytes = 8;

    /// <summary>True for an id that names a report (neither STOP nor DONE).</summary>
    public static bool IsReportId(uint id) => id >= FirstReportId;
}
